"""The app over HTTP (gradio_client on loopback): the bad-input corpus, the upload size limit, temp-file hygiene,
and a CI-sized load run (``tools/load_test.py`` does the 16-session run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hardening_cases import ALL_BUILDERS
from malformed_corpus import build_case

pytestmark = [pytest.mark.server, pytest.mark.filterwarnings("ignore::UserWarning")]
ROOT = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("ctscribe_load_test", ROOT / "tools" / "load_test.py")
load_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load_test)


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """The real pipeline (no CT model/LLM/store: loading and regions only) with a 2 MB upload limit and its own
    temp dir, so leftovers can be counted."""
    base = tmp_path_factory.mktemp("http")
    tmp = base / "tmp"
    tmp.mkdir()
    proc, url, log = load_test.start_server(
        base / "home", None, ["report.use_model=false", "report.use_store=false", "report.use_llm=false",
                              "app.max_upload_mb=2"], env_extra={"TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "g")})
    yield proc, url, tmp
    load_test.stop_server(proc)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.mark.slow
def test_every_bad_upload_gets_a_message_and_the_server_stays_up(real_server, tmp_path):
    proc, url, tmp = real_server
    c = load_test.client(url)
    n = 0
    failures = []
    for b in ALL_BUILDERS:
        case = build_case(b, tmp_path)
        if case.upload is None or case.kwargs:
            continue
        status = load_test.upload(c, case.upload)
        n += 1
        low = status.lower()
        if not status.startswith("**Could not load the study:**") or not all(w in low for w in case.words):
            failures.append((case.name, status[:200]))
        assert proc.poll() is None, f"server died on {case.name}"
    assert n >= 50 and not failures, failures
    # the server is still healthy: a good study loads in the same session afterwards
    good = load_test.make_study(tmp_path / "good", 1, real=True)
    assert load_test.upload(c, good).startswith("**Study**")
    # no extraction dirs left; uploads only in gradio's cache and the session dirs
    left = [p.name for p in tmp.iterdir() if p.name.startswith("ctscribe-zip-")]
    assert not left, left


def test_upload_over_the_size_limit_is_refused(real_server, tmp_path):
    proc, url, _ = real_server
    big = tmp_path / "big.nii"
    big.write_bytes(b"\0" * (3 * 2**20))
    c = load_test.client(url)
    with pytest.raises(Exception) as info:
        load_test.upload(c, big)
    assert "size" in str(info.value).lower() or "413" in str(info.value) or "large" in str(info.value).lower()
    assert proc.poll() is None


@pytest.mark.slow
def test_concurrent_sessions_only_see_their_own_study(tmp_path):
    studies = [load_test.make_study(tmp_path / "studies", i, real=False) for i in range(4)]
    proc, url, _log = load_test.start_server(tmp_path / "home")
    try:
        summary = load_test.run_load(url, proc.pid, studies, n_questions=3)
        assert proc.poll() is None
    finally:
        load_test.stop_server(proc)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["answers"] == 12 and summary["foreign_answers"] == 0
    assert summary["rss_peak_mb"] < 2048
    print(summary)
