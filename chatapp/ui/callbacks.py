"""The app's behaviour as plain functions of (pipeline, session, inputs): testable without gradio or a browser.

``chatapp.app`` only wires these to components. Everything a user can get wrong raises ``CTScribeError`` with a
message that says what to do; the wiring turns it into a visible status message.
"""

from __future__ import annotations

import copy
import html
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chatapp.schema import DEMO_WEIGHTS_NOTICE, DRAFT_NOTICE, Answer, Citation, Report, Sentence
from chatapp.sessions import Session
from vision.errors import CTScribeError, InputNotFoundError
from vision.registry import REGION_KEYS, WINDOWS
from vision.registry import region as region_info

from .viewer import PLANE_AXIS, PLANES, colour_for, mask_centroid, overlay_choices, render_slice

ProgressFn = Callable[[float, str], None]
SENTENCE_HEADERS = ["#", "Section", "Sentence", "Status", "Source", "Conf."]
MEASUREMENT_HEADERS = ["Measurement", "Value", "Unit", "Region", "Confidence"]
STATUSES = ("draft", "accepted", "edited", "removed", "flagged")


# ----------------------------------------------------------------------------------------------------- upload
def prepare_input(session: Session, files: Sequence[str | Path] | str | Path | None) -> Path:
    """Turn what the upload widget gave into one path ``Pipeline.analyze`` accepts.

    One file (a zip, NIfTI, NRRD or a single DICOM file) is passed as is; several files (a DICOM series picked
    file by file, or a folder upload) are copied into a fresh folder in the session's private dir.
    """
    if files is None or files == "" or (isinstance(files, (list, tuple)) and not files):
        raise InputNotFoundError("no file uploaded; choose a DICOM zip, the files of one DICOM series, "
                                 "or a NIfTI (.nii/.nii.gz) file")
    paths = [Path(str(getattr(f, "name", f))) for f in (files if isinstance(files, (list, tuple)) else [files])]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise InputNotFoundError(f"uploaded file(s) {', '.join(missing)} are no longer on the server; upload again")
    if len(paths) == 1:
        return paths[0]
    folder = session.dir / "upload"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, p in enumerate(paths):
        shutil.copy2(p, folder / f"{i:05d}_{p.name}")
    return folder


def load_study(pipeline: Any, session: Session, files: Any, progress: ProgressFn | None = None) -> Session:
    """Analyze the upload and draft its report into ``session`` (the previous study of the session is dropped).

    Progress goes 0→0.8 through the pipeline's own steps (loading, regions, encoding), then "drafting report".
    The report is deep-copied so edits in this session never touch an object another session could share through
    the pipeline's cache.
    """
    prog = progress or (lambda f, m: None)
    session.reset()
    path = prepare_input(session, files)
    prog(0.0, "loading")
    study = pipeline.analyze(path, progress=lambda f, m: prog(0.8 * float(f), m))
    if getattr(pipeline, "settings", {}).get("warm_chat") and hasattr(pipeline, "warm_chat"):
        pipeline.warm_chat(study)  # background prefill of the chat prompt: the first question starts in < 1 s
    prog(0.85, "drafting report")
    report = copy.deepcopy(pipeline.report(study))
    for i, s in enumerate(report.sentences()):
        if not s.id:
            s.id = f"s{i + 1}"
    session.study, session.report = study, report
    session.touch()
    prog(1.0, "done")
    return session


def status_message(session: Session) -> str:
    st = session.study
    if st is None:
        return "Upload a CT study to begin."
    v = st.volume
    shape = "x".join(str(s) for s in v.shape)
    spacing = " x ".join(f"{s:.2g}" for s in v.spacing)
    n = len(session.report.sentences()) if session.report else 0
    lines = [f"**Study** `{st.study_id[:12]}` · {shape} voxels · {spacing} mm · {n} draft sentences"]
    lines += [f"- note: {w}" for w in (list(getattr(v, "warnings", []) or []) + list(st.warnings or []))]
    return "\n".join(lines)


def banner_html(session: Session | None) -> str:
    """Always the drafting-aid notice; a red demo-weights banner when the study or report used demo weights."""
    weights = ""
    if session is not None:
        weights = " ".join(w for w in ((session.report.weights if session.report else ""),
                                       (session.study.weights if session.study else "")) if w)
    parts = [f'<div class="cts-notice" id="cts-draft-notice">{html.escape(DRAFT_NOTICE)}</div>']
    if DEMO_WEIGHTS_NOTICE in weights:
        parts.insert(0, '<div class="cts-demo" id="cts-demo-banner">Demo weights in use: '
                     f'{html.escape(session.report.weights if session.report else weights)}. Findings are '
                     'illustrative only; do not use for patient care.</div>')
    return "".join(parts)


# ----------------------------------------------------------------------------------------------------- viewer
def slider_setup(session: Session) -> dict[str, tuple[int, int]]:
    """plane → (max index, initial index = middle slice)."""
    shape = session.study.volume.shape
    return {p: (shape[PLANE_AXIS[p]] - 1, shape[PLANE_AXIS[p]] // 2) for p in PLANES}


def available_overlays(session: Session) -> list[str]:
    st = session.study
    if st is None:
        return []
    return overlay_choices(st.regions, st.finding_masks, st.absent_regions)


def resolve_mask(session: Session, mask_id: str | None) -> np.ndarray | None:
    """Mask for an id like ``regions/lung``, ``lung`` or ``findings/lung_nodule_1``; None when unknown."""
    st = session.study
    if st is None or not mask_id:
        return None
    if mask_id in st.finding_masks:
        return st.finding_masks[mask_id]
    key = mask_id.split("/", 1)[1] if "/" in mask_id else mask_id
    if mask_id.startswith("findings/") and key in st.finding_masks:
        return st.finding_masks[key]
    return st.regions.get(key)


def render_plane(session: Session | None, plane: str, index: int, window: str, overlays: Sequence[str],
                 alpha: float) -> np.ndarray | None:
    """One RGB slice (H, W, 3) uint8 with the chosen overlays, or None before a study is loaded."""
    if session is None or session.study is None:
        return None
    if window not in WINDOWS:
        raise CTScribeError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
    names = available_overlays(session)
    pairs = []
    for name in overlays or ():
        m = resolve_mask(session, name)
        if m is not None:
            pairs.append((m, colour_for(names.index(name) if name in names else len(pairs))))
    return render_slice(session.study.volume, plane, int(index), window, pairs, float(alpha))


def render_all(session: Session | None, indices: Sequence[int], window: str, overlays: Sequence[str],
               alpha: float) -> list[np.ndarray | None]:
    return [render_plane(session, p, i, window, overlays, alpha) for p, i in zip(PLANES, indices)]


def overlay_legend(session: Session | None, overlays: Sequence[str]) -> str:
    if session is None or session.study is None:
        return ""
    names = available_overlays(session)
    items = []
    for name in overlays or ():
        r, g, b = colour_for(names.index(name) if name in names else 0)
        items.append(f'<span class="cts-swatch" style="background: rgb({r},{g},{b})"></span>{html.escape(name)}')
    return '<div class="cts-legend">' + " ".join(items) + "</div>" if items else ""


def measurement_rows(session: Session | None) -> list[list[Any]]:
    if session is None or session.study is None:
        return []
    rows = []
    for m in session.study.measurements:
        val = "n/a" if m.value is None else (round(m.value, 2) if isinstance(m.value, float) else m.value)
        rows.append([m.name, val, m.unit, m.region, m.confidence])
    return rows


# ----------------------------------------------------------------------------------------------------- report
def _section_title(key: str) -> str:
    if key in REGION_KEYS:
        return region_info(key).label
    return key.replace("_", " ").capitalize()


def sentence_rows(session: Session | None) -> list[list[Any]]:
    """One row per sentence, in report (region) order; row i is ``report.sentences()[i]``."""
    if session is None or session.report is None:
        return []
    rows = []
    for sec in session.report.sections:
        for s in sec.sentences:
            rows.append([len(rows) + 1, sec.title or _section_title(sec.region), s.text, s.status, s.source,
                         round(float(s.confidence), 2)])
    return rows


def sentence_at(session: Session, row: int) -> Sentence:
    if session.report is None:
        raise CTScribeError("no draft yet; upload a CT study first")
    sents = session.report.sentences()
    if not 0 <= int(row) < len(sents):
        raise CTScribeError(f"sentence {row + 1} does not exist; click a row of the draft table")
    return sents[int(row)]


def sentence_by_id(session: Session, sid: str) -> Sentence:
    if session is None or session.report is None:
        raise CTScribeError("no draft yet; upload a CT study first")
    for s in session.report.sentences():
        if s.id == sid:
            return s
    raise CTScribeError("select a sentence in the draft table first")


def _citation(report: Report, n: int) -> Citation | None:
    return next((c for c in report.citations if c.n == n), None)


def citations_html(citations: Sequence[Citation], title: str = "Sources") -> str:
    """Clickable citations: each ``<details>`` opens the cited passage (offline, no link needed)."""
    if not citations:
        return ""
    out = [f'<div class="cts-cites"><div class="cts-cites-title">{html.escape(title)}</div>']
    for c in citations:
        meta = " · ".join(x for x in (c.source, c.section) if x)
        link = f' <a href="{html.escape(c.url)}" target="_blank" rel="noopener">link</a>' if c.url else ""
        out.append(f'<details class="cts-cite" data-key="{html.escape(c.key)}"><summary>[{c.n}] '
                   f'{html.escape(c.title)}</summary><div class="cts-meta">{html.escape(meta)}{link}</div>'
                   f'<blockquote>{html.escape(c.text or "(passage text not stored)")}</blockquote></details>')
    out.append("</div>")
    return "".join(out)


def evidence_panel(session: Session, s: Sentence) -> str:
    """HTML for the selected sentence: its region/mask, evidence items, confidence and the passages it cites."""
    parts = [f'<div class="cts-evidence"><div class="cts-ev-text">{html.escape(s.text)}</div>',
             f'<div class="cts-meta">{html.escape(_section_title(s.region))} · source: {html.escape(s.source)} · '
             f'confidence {float(s.confidence):.2f} · status: {html.escape(s.status)}'
             + (f' · mask: <code>{html.escape(s.mask)}</code>' if s.mask else "") + "</div>"]
    if s.evidence:
        parts.append("<ul>" + "".join(f"<li><b>{html.escape(e.kind)}</b>: {html.escape(e.label)}</li>"
                                      for e in s.evidence) + "</ul>")
    else:
        parts.append('<div class="cts-meta">No quantitative evidence stored for this sentence.</div>')
    parts.append("</div>")
    cites = [c for c in (_citation(session.report, n) for n in s.citations) if c is not None]
    return "".join(parts) + citations_html(cites, "Cited passages")


def select_sentence(session: Session, row: int) -> tuple[Sentence, tuple[int, int, int] | None]:
    """The sentence at ``row`` and the voxel (x, y, z) to jump the viewer to (centroid of its mask, if any)."""
    s = sentence_at(session, row)
    mask = resolve_mask(session, s.mask)
    if mask is None and s.region in REGION_KEYS:
        mask = resolve_mask(session, f"regions/{s.region}")
    return s, (mask_centroid(mask) if mask is not None else None)


def centroid_indices(c: tuple[int, int, int]) -> dict[str, int]:
    """Voxel (x, y, z) → slider index per plane."""
    return {p: int(c[PLANE_AXIS[p]]) for p in PLANES}


def set_sentence(session: Session, sid: str, action: str, text: str | None = None) -> Sentence:
    """Apply a review action to one sentence.

    Args:
        action: ``accept`` | ``edit`` (needs ``text``) | ``remove`` | ``restore`` (back to draft).
    """
    s = sentence_by_id(session, sid)
    if action == "accept":
        s.status = "accepted"
    elif action == "edit":
        new = " ".join((text or "").split())
        if not new:
            raise CTScribeError("the edited sentence is empty; type the new text, or use Remove to drop it")
        if new != s.text:
            s.text = new
            s.status = "edited"
    elif action == "remove":
        s.status = "removed"
    elif action == "restore":
        s.status = "draft"
    else:
        raise CTScribeError(f"unknown action {action!r}; use accept, edit, remove or restore")
    session.touch()
    return s


def report_preview_html(session: Session | None) -> str:
    """The report as it will be exported, grouped by section, with references that open their passage."""
    if session is None or session.report is None:
        return '<div class="cts-meta">The draft appears here after the upload.</div>'
    r = session.report
    out = ['<div class="cts-report">']
    for sec in r.sections:
        kept = [s for s in sec.sentences if s.status != "removed"]
        if not kept:
            continue
        body = " ".join(f'<span class="cts-s cts-{s.status}">{html.escape(s.text)}</span>' for s in kept)
        out.append(f'<p><b>{html.escape(sec.title or _section_title(sec.region))}:</b> {body}</p>')
    out.append("</div>")
    return "".join(out) + citations_html(r.citations, "References")


# ------------------------------------------------------------------------------------------------------- chat
def chat_stream(pipeline: Any, session: Session, question: str) -> Iterator[tuple[list[dict], str]]:
    """Stream an answer: yields (chat history for the Chatbot, citations HTML) after each text delta.

    The final yield's history ends with the full answer plus a "Sources" line; the citations HTML holds the cited
    passages (newest answer first).
    """
    q = " ".join((question or "").split())
    if not q:
        raise CTScribeError("type a question about the scan first")
    if session.study is None:
        raise CTScribeError("upload a CT study before asking questions about it")
    prior = [dict(m) for m in session.history]
    session.history.append({"role": "user", "content": q})
    session.history.append({"role": "assistant", "content": ""})
    text = ""
    answer: Answer | None = None
    for part in pipeline.ask_stream(session.study, q, history=prior):
        if isinstance(part, Answer):
            answer = part
            break
        text += str(part)
        session.history[-1]["content"] = text
        yield [dict(m) for m in session.history], citations_html(session.citations)
    if answer is not None:
        final = answer.text or text
        if answer.citations:
            final += "\n\nSources: " + "; ".join(f"[{c.n}] {c.title}" for c in answer.citations)
        session.history[-1]["content"] = final
        session.citations = list(answer.citations) + [c for c in session.citations
                                                     if c.key not in {a.key for a in answer.citations}]
    session.touch()
    yield [dict(m) for m in session.history], citations_html(session.citations)


# ----------------------------------------------------------------------------------------------------- export
def export_files(session: Session | None, formats: Sequence[str] = ("txt", "json", "pdf")) -> list[str]:
    """Write the edited report into the session's private dir; returns the file paths."""
    from chatapp.export import export_report

    if session is None or session.report is None:
        raise CTScribeError("nothing to export yet; upload a CT study and review the draft first")
    if not formats:
        raise CTScribeError("choose at least one export format (txt, json or pdf)")
    out = session.dir / "export"
    return [str(p) for p in export_report(session.report, out, tuple(formats))]
