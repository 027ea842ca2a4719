"""Ingestion: every supported format, content-hash idempotence, delete by source, the MedQuAD subset, and resume after
SIGKILL (a real subprocess killed midway, then re-run: every chunk stored exactly once)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, shared_path


def _store(path: Path | None = None, collection: str | None = None):
    import chromadb
    from chromadb.config import Settings

    from retrieval.embed import get_embedder
    from retrieval.store import KnowledgeStore

    settings = Settings(anonymized_telemetry=False)
    client = chromadb.PersistentClient(str(path), settings=settings) if path else chromadb.EphemeralClient(settings)
    return KnowledgeStore(client, get_embedder(), collection=collection or f"ing-{uuid.uuid4().hex[:8]}",
                          chunk_size=300, chunk_overlap=30)


def _make_docs(d: Path) -> dict[str, Path]:
    from fpdf import FPDF

    files = {}
    files["txt"] = d / "notes.txt"
    files["txt"].write_text("Plain notes about sarcoidosis. " * 30)
    files["md"] = d / "guide.md"
    files["md"].write_text("# Pleura guide\n\n## Effusion\n\nFluid in the pleural space is common in heart failure.\n\n"
                           "## Pneumothorax\n\nAir in the pleural space shows a visceral pleural line.\n")
    files["html"] = d / "page.html"
    files["html"].write_text("<html><head><title>Aorta page</title><script>var x=1;</script>"
                             "<link rel='canonical' href='https://example.org/aorta'></head><body><h1>Aorta</h1>"
                             "<p>The thoracic aorta is measured outer wall to outer wall.</p></body></html>")
    files["pdf"] = d / "paper.pdf"
    pdf = FPDF()
    for text in ("Page one discusses bronchiectasis and airway widening.", "Page two covers emphysema scoring."):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 10, text)
    pdf.output(str(files["pdf"]))
    files["jsonl"] = d / "qa.jsonl.gz"
    with gzip.open(files["jsonl"], "wt") as f:
        f.write(json.dumps({"id": "r1", "title": "Hernia", "text": "A hiatal hernia lets stomach rise into the chest.",
                            "url": "https://example.org/h", "license": "CC0"}) + "\n")
        f.write("not json\n")
        f.write(json.dumps({"question": "What is asthma?", "answer": "Asthma narrows the airways. " * 20}) + "\n")
    return files


def test_ingest_all_formats_rerun_adds_nothing_and_delete_by_source(tmp_path):
    from retrieval.ingest import ingest_paths

    files = _make_docs(tmp_path)
    store = _store()
    stats = ingest_paths(store, [tmp_path], progress=False, license="CC BY 4.0")
    assert stats.files == 5 and stats.added == stats.chunks > 5 and stats.bad_records == 1
    assert store.count() == stats.added
    origins = store.stats()["by_origin"]
    assert set(origins) == {str(p.resolve()) for p in files.values()}

    again = ingest_paths(store, [tmp_path], progress=False)
    assert again.added == 0 and again.skipped == stats.chunks and store.count() == stats.added

    hit = store.search("pleural line of air", k=1)[0]
    assert hit.metadata["origin"] == str(files["md"].resolve()) and "Pneumothorax" in hit.section
    assert hit.title == "Pleura guide" and hit.metadata["license"] == "CC BY 4.0" and hit.metadata["ingested_at"]
    pdf_hit = store.search("emphysema scoring", k=1)[0]
    assert pdf_hit.section == "page 2" and pdf_hit.key.startswith("paper-p2")
    html_hit = store.search("outer wall to outer wall", k=1)[0]
    assert html_hit.title == "Aorta page" and html_hit.url == "https://example.org/aorta" and "var x" not in html_hit.text
    rec = store.search("stomach rises into the chest", k=1)[0]
    assert rec.metadata["license"] == "CC0" and rec.url == "https://example.org/h"
    qa = store.search("what is asthma", k=1)[0]
    assert qa.text.startswith("Q: What is asthma?\nA: ")

    n_pdf = origins[str(files["pdf"].resolve())]
    assert store.delete_source(str(files["pdf"])) == n_pdf
    assert store.count() == stats.added - n_pdf
    assert ingest_paths(store, [files["pdf"]], progress=False).added == n_pdf


@pytest.mark.data
@pytest.mark.slow
def test_medquad_subset_with_progress_bar(capsys):
    """CI runs the first 40 pairs (about 300 chunks: the long CancerGov answers come first); a second run adds 0.
    The full 16,407-pair run is done by hand (``ctscribe ingest``) for the throughput figure."""
    from retrieval.ingest import ingest_paths

    path = shared_path("rag_medquad", "medquad_qa.jsonl.gz")
    store = _store()
    store.chunk_size, store.chunk_overlap = 800, 100
    stats = ingest_paths(store, [path], progress=True, limit=40, batch_size=128)
    err = capsys.readouterr().err
    assert "medquad_qa.jsonl.gz" in err and "40/40" in err  # the tqdm bar
    assert stats.documents == 40 and stats.added == stats.chunks >= 40
    print(f"\nMedQuAD subset: {stats.to_dict()}")
    assert ingest_paths(store, [path], progress=False, limit=40).added == 0
    hit = store.search("What are the symptoms of adult acute lymphoblastic leukemia?", k=3)
    top = hit[0]
    assert top.key.startswith("medquad-") and top.metadata["license"] == "CC BY 4.0"
    assert top.source.startswith("MedQuAD") and top.url.startswith("https://")


N_DOCS = 200
_CHILD = textwrap.dedent("""
    import sys
    import chromadb
    from chromadb.config import Settings
    from retrieval.embed import get_embedder
    from retrieval.ingest import ingest_paths
    from retrieval.store import KnowledgeStore

    client = chromadb.PersistentClient(sys.argv[1], settings=Settings(anonymized_telemetry=False))
    store = KnowledgeStore(client, get_embedder(), collection="kill-test", chunk_size=300, chunk_overlap=30)
    ingest_paths(store, [sys.argv[2]], progress=False, batch_size=8,
                 on_batch=lambda n, added: print("batch", n, added, flush=True))
    print("done", flush=True)
""")


@pytest.mark.slow
def test_sigkill_midway_then_rerun_stores_every_chunk_exactly_once(tmp_path):
    from retrieval.ingest import SourceDoc, chunk_document, ingest_paths

    data = tmp_path / "corpus.jsonl"
    with data.open("w") as f:
        for i in range(N_DOCS):
            f.write(json.dumps({"id": f"doc{i}", "title": f"Doc {i}",
                                "text": f"Record {i} describes finding number {i} in region {i % 10}."}) + "\n")
    db = tmp_path / "db"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT), env=env)
    batches, deadline = 0, time.monotonic() + 180
    try:
        for line in proc.stdout:  # each line = one committed batch
            assert not line.startswith("done"), "the child finished before it could be killed"
            batches += line.startswith("batch")
            if batches >= 3 or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and batches >= 3

    store = _store(db, collection="kill-test")
    before = store.count()
    assert 3 * 8 <= before < N_DOCS
    stats = ingest_paths(store, [data], progress=False, batch_size=8)
    assert stats.added == N_DOCS - before and store.count() == N_DOCS
    origin = str(data.resolve())
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=300, chunk_overlap=30)
    expected = set()
    for i in range(N_DOCS):
        text = f"Record {i} describes finding number {i} in region {i % 10}."
        expected |= {c.id for c in chunk_document(SourceDoc(doc_key=f"doc{i}", text=text, title="", source=""),
                                                  origin, splitter)}
    stored = store.collection.get(include=[])["ids"]
    assert len(stored) == len(set(stored)) == N_DOCS and set(stored) == expected
    assert ingest_paths(store, [data], progress=False).added == 0


@pytest.mark.parametrize("bad", ["broken.jsonl.gz", "broken.pdf"])
def test_corrupt_files_raise_typed_errors(tmp_path, bad):
    from retrieval.ingest import ingest_paths
    from vision.errors import CorruptFileError

    p = tmp_path / bad
    p.write_bytes(b"\x1f\x8b\x08garbage" if bad.endswith(".gz") else b"%PDF-1.4 garbage")
    with pytest.raises(CorruptFileError):
        ingest_paths(_store(), [p], progress=False)
