"""The same KnowledgeStore adapter against a real ``chroma run`` server on 127.0.0.1 (started and stopped here)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    exe = Path(sys.executable).with_name("chroma")
    exe = str(exe) if exe.exists() else shutil.which("chroma")
    if not exe:
        pytest.skip("the chroma CLI is not installed")
    port = _free_port()
    log = (tmp_path / "chroma.log").open("w")
    proc = subprocess.Popen([exe, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(tmp_path / "srv")],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma server did not start: {(tmp_path / 'chroma.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.mark.server
def test_store_through_a_real_chroma_server(chroma_server, tmp_path):
    from chatapp.config import load_config
    from retrieval.ingest import ingest_paths
    from retrieval.store import KnowledgeStore

    cfg = load_config(overrides=[f"retrieval.server_url={chroma_server}", f"data_dir={tmp_path / 'home'}"])
    store = KnowledgeStore.from_config(cfg)
    assert type(store.client).__name__ != "PersistentClient" and not (tmp_path / "home" / "chroma").exists()
    n = store.ensure_builtin()
    assert n > 40 and store.count() == n
    hits = store.search("follow-up of a 7 mm solid nodule low risk", k=3)
    assert hits[0].key == "fleischner-2017-solid-single" and 0 < hits[0].score <= 1
    assert hits[0].to_citation(1).url.startswith("https://doi.org/")

    doc = tmp_path / "note.md"
    doc.write_text("# Server note\n\nA test passage about pulmonary embolism filling defects.\n")
    assert ingest_paths(store, [doc], progress=False).added == 1
    # a second adapter (a new HttpClient) sees the same data: nothing re-added
    other = KnowledgeStore.from_config(cfg)
    assert other.ensure_builtin() == 0 and ingest_paths(other, [doc], progress=False).added == 0
    assert other.search("pulmonary embolism filling defect", k=1)[0].title == "Server note"
    assert other.delete_source(str(doc)) == 1 and other.count() == n
    docs = other.as_retriever(k=1).invoke("emphysema LAA-950 threshold")
    assert docs[0].metadata["key"] == "emphysema-laa950-threshold"


def test_unreachable_server_is_a_typed_error(tmp_path):
    from chatapp.config import load_config
    from retrieval.store import KnowledgeStore
    from vision.errors import StoreError

    cfg = load_config(overrides=[f"retrieval.server_url=http://127.0.0.1:{_free_port()}"])
    with pytest.raises(StoreError, match="chroma run"):
        KnowledgeStore.from_config(cfg).count()
