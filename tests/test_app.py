"""App behaviour without a browser: the callbacks are plain functions run against the FakePipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_pipeline import FakePipeline

from chatapp.config import load_config
from chatapp.schema import DEMO_WEIGHTS_NOTICE, DRAFT_NOTICE
from chatapp.sessions import Session, close_session, sweep_stale
from chatapp.ui import callbacks as cb
from chatapp.ui.viewer import mask_centroid, render_slice, take_slice
from vision.errors import ConfigError, CTScribeError, InputNotFoundError, UnsupportedFormatError


def _upload(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.fixture
def pipeline():
    return FakePipeline()


@pytest.fixture
def session(tmp_path):
    s = Session.create(tmp_path / "sessions")
    yield s
    s.close()


@pytest.fixture
def loaded(pipeline, session, tmp_path):
    cb.load_study(pipeline, session, [str(_upload(tmp_path, "a.nii.gz", b"study-a"))])
    return session


def test_load_reports_progress_in_order_and_fills_session(pipeline, session, tmp_path):
    steps: list[tuple[float, str]] = []
    cb.load_study(pipeline, session, [str(_upload(tmp_path, "a.nii.gz", b"x"))], lambda f, m: steps.append((f, m)))
    names = [m for _, m in steps]
    for expected in ("loading", "regions", "encoding", "drafting report", "done"):
        assert expected in names
    fracs = [f for f, _ in steps]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    assert session.study is not None and session.report is not None
    assert all(s.id for s in session.report.sentences())


def test_multiple_files_become_one_private_folder(pipeline, session, tmp_path):
    files = [str(_upload(tmp_path, f"CT.{i}", bytes([i]) * 10)) for i in range(3)]
    path = cb.prepare_input(session, files)
    assert path.is_dir() and path.parent == session.dir and len(list(path.iterdir())) == 3


@pytest.mark.parametrize("files,err", [(None, InputNotFoundError), ([], InputNotFoundError)])
def test_missing_upload_is_a_typed_error(pipeline, session, files, err):
    with pytest.raises(err, match="upload|DICOM"):
        cb.load_study(pipeline, session, files)


def test_bad_file_is_a_typed_error_and_leaves_no_study(pipeline, session, tmp_path):
    with pytest.raises(UnsupportedFormatError, match="DICOM zip"):
        cb.load_study(pipeline, session, [str(_upload(tmp_path, "notes.txt", b"hello"))])
    assert session.study is None and session.report is None


def test_banner_shows_draft_notice_always_and_demo_banner_only_for_demo_weights(tmp_path, session):
    assert DRAFT_NOTICE in cb.banner_html(None) and "cts-demo-banner" not in cb.banner_html(None)
    cb.load_study(FakePipeline(demo_weights=True), session, [str(_upload(tmp_path, "a.nii", b"1"))])
    assert "cts-demo-banner" in cb.banner_html(session) and DEMO_WEIGHTS_NOTICE in cb.banner_html(session)
    cb.load_study(FakePipeline(demo_weights=False), session, [str(_upload(tmp_path, "a.nii", b"1"))])
    assert "cts-demo-banner" not in cb.banner_html(session) and DRAFT_NOTICE in cb.banner_html(session)


def test_orientation_is_radiological():
    """Patient right (high X in RAS) on the image left, anterior (high Y) and superior (high Z) up."""
    a = np.zeros((4, 5, 6))
    a[3, 4, 5] = 1  # most right, anterior, superior voxel
    ax = take_slice(a, "axial", 5)
    assert ax.shape == (5, 4) and ax[0, 0] == 1
    co = take_slice(a, "coronal", 4)
    assert co.shape == (6, 4) and co[0, 0] == 1
    sa = take_slice(a, "sagittal", 3)
    assert sa.shape == (6, 5) and sa[0, 0] == 1


def test_render_windows_overlays_and_aspect(loaded):
    vol = loaded.study.volume
    lung = render_slice(vol, "axial", 24, "lung")
    bone = render_slice(vol, "axial", 24, "bone")
    assert lung.dtype == np.uint8 and lung.ndim == 3 and lung.shape[2] == 3
    assert not np.array_equal(lung, bone)  # window presets change the picture
    mask = loaded.study.regions["lung"]
    over = render_slice(vol, "axial", 24, "lung", [(mask, (255, 0, 0))], 0.5)
    assert (over[..., 0].astype(int) - over[..., 1]).max() > 50  # red tint where the lungs are
    cor = render_slice(vol, "coronal", 32, "lung")  # 48 slices x 2 mm vs 64 x 1.5 mm: equal physical extent
    assert abs(cor.shape[0] - cor.shape[1]) <= 1


def test_selecting_a_sentence_jumps_to_its_mask_centroid(loaded):
    rows = cb.sentence_rows(loaded)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0][1] == "Lungs"  # grouped by region, in report order
    s, c = cb.select_sentence(loaded, 0)
    assert s.mask == "findings/lung_nodule_1"
    assert c == mask_centroid(loaded.study.finding_masks["findings/lung_nodule_1"])
    idx = cb.centroid_indices(c)
    assert (idx["sagittal"], idx["coronal"], idx["axial"]) == c
    assert loaded.study.finding_masks["findings/lung_nodule_1"][c]
    html = cb.evidence_panel(loaded, s)
    assert "nodule diameter = 4.0 mm" in html and "P(Lung nodule)" in html
    imp, _ = cb.select_sentence(loaded, 4)  # impression cites [1]: its passage opens from the panel
    assert "<details" in cb.evidence_panel(loaded, imp) and "6 mm" in cb.evidence_panel(loaded, imp)
    with pytest.raises(CTScribeError):
        cb.select_sentence(loaded, 99)


def test_review_actions_change_preview_and_export(loaded):
    sents = loaded.report.sentences()
    cb.set_sentence(loaded, sents[0].id, "edit", "  A 5 mm nodule   in the right upper lobe. ")
    cb.set_sentence(loaded, sents[1].id, "remove")
    cb.set_sentence(loaded, sents[2].id, "accept")
    assert [s.status for s in sents[:3]] == ["edited", "removed", "accepted"]
    preview = cb.report_preview_html(loaded)
    assert "A 5 mm nodule in the right upper lobe." in preview and "No emphysema" not in preview
    with pytest.raises(CTScribeError, match="empty"):
        cb.set_sentence(loaded, sents[0].id, "edit", "   ")
    cb.set_sentence(loaded, sents[1].id, "restore")
    assert sents[1].status == "draft" and "No emphysema" in cb.report_preview_html(loaded)
    with pytest.raises(CTScribeError, match="select a sentence"):
        cb.set_sentence(loaded, "", "accept")


def test_edits_never_touch_the_pipelines_report_object(session, tmp_path):
    """A pipeline may cache and share Report objects between sessions: the app edits a private copy."""
    class Caching(FakePipeline):
        cached = None

        def report(self, study):
            Caching.cached = Caching.cached or super().report(study)
            return Caching.cached

    p = Caching()
    cb.load_study(p, session, [str(_upload(tmp_path, "a.nii", b"1"))])
    cb.set_sentence(session, session.report.sentences()[0].id, "edit", "changed by user one")
    assert Caching.cached.sentences()[0].text != "changed by user one"


def test_chat_streams_then_cites(loaded, pipeline):
    updates = list(cb.chat_stream(pipeline, loaded, "Is there a nodule?"))
    assert len(updates) > 3  # streamed: several partial updates before the final one
    partial = updates[1][0][-1]["content"]
    final_hist, cites_html = updates[-1]
    assert len(partial) < len(final_hist[-1]["content"])
    assert final_hist[-2] == {"role": "user", "content": "Is there a nodule?"}
    assert "Sources: [1] Fleischner" in final_hist[-1]["content"]
    assert "<details" in cites_html and "no routine follow-up" in cites_html.lower()
    list(cb.chat_stream(pipeline, loaded, "anything else?"))
    assert len(loaded.history) == 4


def test_chat_errors(pipeline, session, loaded):
    with pytest.raises(CTScribeError, match="upload"):
        list(cb.chat_stream(pipeline, session if session.study is None else Session.create(), "hi"))
    with pytest.raises(CTScribeError, match="question"):
        list(cb.chat_stream(pipeline, loaded, "   "))


def test_export_writes_into_the_session_dir(loaded):
    paths = [Path(p) for p in cb.export_files(loaded, ["txt", "json", "pdf"])]
    assert [p.suffix for p in paths] == [".txt", ".json", ".pdf"]
    assert all(loaded.dir in p.parents for p in paths)
    with pytest.raises(CTScribeError, match="nothing to export"):
        cb.export_files(Session.create(loaded.dir.parent), ["txt"])


def test_sessions_are_isolated_and_cleaned_up(pipeline, tmp_path):
    a, b = Session.create(tmp_path), Session.create(tmp_path)
    cb.load_study(pipeline, a, [str(_upload(tmp_path, "a.nii", b"patient-a"))])
    cb.load_study(pipeline, b, [str(_upload(tmp_path, "b.nii", b"patient-b"))])
    list(cb.chat_stream(pipeline, a, "nodule?"))
    assert a.dir != b.dir and a.study.study_id != b.study.study_id
    tag_a = a.study.study_id[:8]
    assert tag_a not in cb.report_preview_html(b) and b.history == []
    cb.export_files(a)
    d = a.dir
    close_session(a)
    close_session(None)  # the gr.State delete callback tolerates an empty state
    assert not d.exists() and a.study is None and b.dir.exists()
    old = Session.create(tmp_path)
    import os
    os.utime(old.dir, (0, 0))
    assert sweep_stale(tmp_path, ttl_s=60) == 1 and not old.dir.exists() and b.dir.exists()


def test_build_app_wires_a_blocks_with_queue(pipeline):
    import gradio as gr

    from chatapp.app import build_app

    demo = build_app(pipeline, load_config(overrides=["app.concurrency_limit=3"]))
    assert isinstance(demo, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"cts-upload", "cts-sentences", "cts-chat", "cts-export", "cts-banner", "cts-img-axial"} <= ids
    assert demo._queue.default_concurrency_limit == 3


# ------------------------------------------------------------------------------------------------ serve command
def _args(**kw):
    return argparse.Namespace(**{"host": None, "port": None, "pipeline": None, **kw})


def test_serve_defaults_to_loopback_without_auth():
    from chatapp.commands.serve import serve_settings

    s = serve_settings(_args(), load_config(), env={})
    assert s == {"host": "127.0.0.1", "port": 7860, "auth": None, "max_file_size": "1024mb"}


def test_serve_refuses_public_host_without_auth():
    from chatapp.commands.serve import serve_settings

    with pytest.raises(ConfigError, match="without a password"):
        serve_settings(_args(host="0.0.0.0"), load_config(), env={})
    s = serve_settings(_args(host="0.0.0.0"), load_config(), env={"CTSCRIBE_AUTH": "rad:secret"})
    assert s["auth"] == [("rad", "secret")]
    s = serve_settings(_args(host="0.0.0.0", port=9000), load_config(overrides=["app.auth=[rad, pw]"]), env={})
    assert s["auth"] == [("rad", "pw")] and s["port"] == 9000


def test_auth_file_and_bad_values(tmp_path):
    from chatapp.commands.serve import resolve_auth

    f = tmp_path / "users"
    f.write_text("# comment\nalice:one\nbob:two\n")
    assert resolve_auth(str(f), env={}) == [("alice", "one"), ("bob", "two")]
    for bad in ("nocolon", ["", "x"], 5):
        with pytest.raises(ConfigError):
            resolve_auth(bad, env={})
    with pytest.raises(ConfigError):
        resolve_auth(None, env={"CTSCRIBE_AUTH": "justuser"})


def test_cli_serve_refusal_exits_2(capsys):
    from chatapp.cli import main

    assert main(["serve", "--host", "10.0.0.5"]) == 2
    assert "without a password" in capsys.readouterr().err
