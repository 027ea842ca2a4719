"""Export an (edited) ``Report`` as plain text, JSON or PDF.

Removed sentences are left out of the text and PDF and kept (with ``status: "removed"``) in the JSON, so the JSON is
the full audit trail of what the model drafted and what the radiologist changed. Every export carries the
"drafting aid, not a diagnosis" notice and the model-weights line (which names demo weights when they were used).
No gradio here: the CLI and the app both call these functions.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from chatapp.schema import DRAFT_NOTICE, Report
from vision.errors import CTScribeError

FORMATS = ("txt", "json", "pdf")


def report_text(report: Report) -> str:
    """The report as the plain text a radiologist would paste into a RIS (sections in region order)."""
    text = report.to_text()
    if DRAFT_NOTICE not in text:
        text += "\n" + DRAFT_NOTICE
    return text + "\n"


def report_json(report: Report) -> str:
    """Full report as JSON (all sentences with status, evidence, citations), plus the export time (UTC)."""
    d = report.to_dict()
    d["exported_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if DRAFT_NOTICE not in d["notices"]:
        d["notices"].append(DRAFT_NOTICE)
    return json.dumps(d, indent=2, ensure_ascii=False, default=str)


def _latin1(s: str) -> str:
    """fpdf2's core fonts are latin-1 only: map common typographic characters and replace the rest."""
    table = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2264": "<=",
             "\u2265": ">=", "\u2022": "-", "\u2026": "...", "\u00a0": " "}
    s = "".join(table.get(ch, ch) for ch in s)
    return s.encode("latin-1", "replace").decode("latin-1")


def report_pdf(report: Report) -> bytes:
    """A one-column A4 PDF: title, notices (demo-weights banner in red), sections, references, weights."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_title("ctscribe draft report")
    pdf.set_creator("ctscribe")
    width = pdf.w - pdf.l_margin - pdf.r_margin

    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(width, 10, "CT report - draft", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(width, 5, _latin1(f"Study {report.study_id[:16]}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    demo = "demo weights" in (report.weights or "")
    for notice in report.notices or [DRAFT_NOTICE]:
        pdf.set_text_color(160, 0, 0)
        pdf.set_font("Helvetica", "B", 9)
        pdf.multi_cell(width, 5, _latin1(notice), new_x="LMARGIN", new_y="NEXT")
    if demo:
        pdf.multi_cell(width, 5, _latin1(f"Model weights: {report.weights}. Not for clinical use."),
                       new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.ln(3)

    for sec in report.sections:
        kept = [s.text for s in sec.sentences if s.status != "removed"]
        if not kept:
            continue
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(width, 7, _latin1(sec.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(width, 5, _latin1(" ".join(kept)), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)

    if report.citations:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(width, 7, "References", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 9)
        for c in report.citations:
            line = f"[{c.n}] {c.title}. {c.source}" + (f". {c.url}" if c.url else "")
            pdf.multi_cell(width, 4.5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    if report.weights and not demo:
        pdf.set_font("Helvetica", "I", 8)
        pdf.multi_cell(width, 4, _latin1(f"Model weights: {report.weights}"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def export_report(report: Report, out_dir: str | Path, formats: tuple[str, ...] = FORMATS,
                  stem: str | None = None) -> list[Path]:
    """Write the report in each of ``formats`` to ``out_dir`` and return the file paths (in ``formats`` order).

    Args:
        report: the (possibly edited) report.
        out_dir: folder to write into (created if needed).
        formats: any of ``"txt"``, ``"json"``, ``"pdf"``.
        stem: file name without suffix; default ``ctscribe-report-<first 8 chars of the study id>``.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise CTScribeError(f"unknown export format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"ctscribe-report-{report.study_id[:8] or 'study'}"
    paths: list[Path] = []
    for fmt in formats:
        p = out / f"{stem}.{fmt}"
        if fmt == "txt":
            p.write_text(report_text(report), encoding="utf-8")
        elif fmt == "json":
            p.write_text(report_json(report), encoding="utf-8")
        else:
            p.write_bytes(report_pdf(report))
        paths.append(p)
    return paths
