"""Exports of an edited report: text, JSON (audit trail) and PDF."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_pipeline import FakePipeline

from chatapp.export import export_report, report_json, report_pdf, report_text
from chatapp.schema import DRAFT_NOTICE
from vision.errors import CTScribeError


@pytest.fixture
def report(tmp_path):
    p = FakePipeline()
    f = tmp_path / "a.nii"
    f.write_bytes(b"x")
    r = p.report(p.analyze(f))
    s = r.sentences()
    s[0].text, s[0].status = "Edited nodule sentence \u2264 6 mm \u2014 right lung.", "edited"
    s[1].status = "removed"
    return r


def test_text_has_edits_not_removed_sentences_and_notices(report):
    t = report_text(report)
    assert "Edited nodule sentence" in t and "No emphysema" not in t
    assert DRAFT_NOTICE in t and "demo weights" in t and "[1] Fleischner" in t
    assert t.index("Lungs:") < t.index("Heart:") < t.index("Impression:")


def test_json_keeps_the_audit_trail(report):
    d = json.loads(report_json(report))
    statuses = [s["status"] for sec in d["sections"] for s in sec["sentences"]]
    assert statuses[:2] == ["edited", "removed"]
    assert d["sections"][0]["sentences"][0]["evidence"][0]["label"] == "nodule diameter = 4.0 mm"
    assert d["exported_at"] and DRAFT_NOTICE in d["notices"] and d["citations"][0]["key"]


def test_pdf_is_a_pdf_with_the_text(report):
    b = report_pdf(report)
    assert b.startswith(b"%PDF-") and b.rstrip().endswith(b"%%EOF") and len(b) > 800
    import re
    import zlib

    streams = b"".join(zlib.decompress(m) for m in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", b, re.DOTALL))
    assert b"Edited nodule sentence <= 6 mm - right lung." in streams  # non-latin-1 characters mapped
    assert b"No emphysema" not in streams  # removed sentence left out
    assert b"drafting aid, not a diagnosis" in streams


def test_export_report_writes_files_and_rejects_unknown_format(report, tmp_path):
    paths = export_report(report, tmp_path / "out", ("txt", "json", "pdf"))
    assert [p.name for p in paths] == [f"ctscribe-report-{report.study_id[:8]}.{x}" for x in ("txt", "json", "pdf")]
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(CTScribeError, match="docx"):
        export_report(report, tmp_path, ("docx",))
