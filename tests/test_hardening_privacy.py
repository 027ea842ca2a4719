"""Privacy: a DICOM series with a marker in every PHI tag goes through the CLI, the Python API and the app's
callbacks; the marker must appear nowhere: logs (DEBUG), stdout/stderr, UI strings, exports (txt/json/pdf), analysis
outputs, the data dir (caches, Chroma store) and the session dir."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import pytest
from hardening_phi import DESC, find_markers, grep_tree, write_phi_series

from chatapp.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def phi_series(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("phi") / "series"
    write_phi_series(d)
    z = d.parent / "series.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(d.iterdir()):
            zf.write(f, f"dicom/{f.name}")
    return d


@pytest.fixture
def debug_log():
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(h)
    yield buf
    root.removeHandler(h)
    root.setLevel(old)


def test_the_series_really_carries_the_markers(phi_series):
    import pydicom

    ds = pydicom.dcmread(next(phi_series.iterdir()))
    assert set(find_markers(str(ds))) >= {"ZQPHI", "19230417", "31337271828", "091Y"}


def test_loaded_volume_holds_no_phi(phi_series):
    from vision.io import load_ct

    vol = load_ct(phi_series)
    assert find_markers(json.dumps({"m": vol.metadata, "s": vol.source, "w": vol.warnings}, default=str)) == []
    vol = load_ct(phi_series.parent / "series.zip", keep_age_sex=True)
    assert vol.metadata.get("age") == "091Y"  # only when the user asks for it
    del vol.metadata["age"]
    assert find_markers(json.dumps({"m": vol.metadata, "s": vol.source}, default=str)) == []


def test_cli_outputs_and_logs_hold_no_phi(phi_series, tmp_path, capsys, debug_log, monkeypatch):
    import os

    home = Path(os.environ["CTSCRIBE_HOME"])
    out = tmp_path / "out"
    base = ["--set", "report.use_model=false", "--set", "report.use_store=false"]
    assert main(["inspect", str(phi_series), "--png", str(tmp_path / "m.png")]) == 0
    assert main(base + ["analyze", str(phi_series), "--out", str(tmp_path / "analysis")]) == 0
    assert main(base + ["report", str(phi_series.parent / "series.zip"), "--out", str(out), "--no-progress"]) == 0
    assert main(base + ["ask", str(phi_series), "Is there a nodule?", "--json"]) == 0
    std = capsys.readouterr()
    leaks = {"stdout": find_markers(std.out), "stderr": find_markers(std.err), "log": find_markers(debug_log.getvalue())}
    leaks.update(grep_tree([out, tmp_path / "analysis", tmp_path / "m.png", home]))
    assert not {k: v for k, v in leaks.items() if v}, leaks
    assert list(out.iterdir())  # something was written (and checked)


@pytest.mark.slow
def test_app_and_api_hold_no_phi_with_the_knowledge_store(phi_series, tmp_path, debug_log):
    """The real pipeline (no CT model, with the Chroma store in CTSCRIBE_HOME) behind the app's callbacks."""
    import os

    from chatapp.config import load_config
    from chatapp.pipeline import Pipeline
    from chatapp.sessions import Session
    from chatapp.ui import callbacks as cb

    home = Path(os.environ["CTSCRIBE_HOME"])
    pipe = Pipeline(load_config(overrides=["report.use_llm=false"]), model=False)
    session = Session.create(tmp_path / "sessions")
    files = sorted(str(p) for p in phi_series.iterdir())
    assert pipe.store is not None, pipe.load_warnings  # the persistent Chroma store under CTSCRIBE_HOME
    cb.load_study(pipe, session, files)
    ui: list[str] = [cb.status_message(session), cb.banner_html(session), cb.report_preview_html(session),
                     json.dumps(cb.sentence_rows(session), default=str),
                     json.dumps(cb.measurement_rows(session), default=str),
                     json.dumps(cb.available_overlays(session))]
    for i in range(len(session.report.sentences())):
        s, _ = cb.select_sentence(session, i)
        ui.append(cb.evidence_panel(session, s))
    for q in ("What is the patient's name?", "When was the scan done?", "Which hospital?",
              "Is there a nodule and what follow-up is advised?"):
        for hist, cites in cb.chat_stream(pipe, session, q):
            pass
        ui += [json.dumps(hist), cites]
    exported = cb.export_files(session, ["txt", "json", "pdf"])
    leaks = {"ui": find_markers("\n".join(ui)), "log": find_markers(debug_log.getvalue())}
    private = [p for p in session.dir.iterdir() if p.name != "upload"]  # upload/ holds the user's own files
    leaks.update(grep_tree([Path(p) for p in exported] + private + [home]))
    assert not {k: v for k, v in leaks.items() if v}, leaks
    assert (home / "chroma").exists() and len(exported) == 3
    session.close()
    assert not session.dir.exists()  # the uploaded copies go with the session


def test_series_description_free_text_is_not_kept(phi_series):
    from vision.io import load_ct

    vol = load_ct(phi_series)
    assert DESC not in json.dumps({"m": vol.metadata, "s": vol.source, "w": vol.warnings}, default=str)
