"""Durability: the Chroma knowledge store and the encoder feature cache survive SIGKILL in the middle of writes.

A writer subprocess fills the store (or the cache) and is killed with SIGKILL at a random moment, several times;
each restart first checks what is on disk (every stored entry complete and correct, no duplicates, nothing partial
served) and then resumes. The last run completes, and the totals must be exact.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STORE_SCRIPT = textwrap.dedent('''
    import hashlib, json, sys
    import numpy as np
    import chromadb
    from chromadb.config import Settings
    from retrieval.embed import Embedder
    from retrieval.store import Chunk, KnowledgeStore, chunk_id

    class HashModel:  # a deterministic stand-in for MiniLM: the vector is a hash of the text
        def get_sentence_embedding_dimension(self):
            return 32
        def encode(self, texts, **kw):
            out = []
            for t in texts:
                v = np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8).astype(np.float32) - 127.5
                out.append(v / np.linalg.norm(v))
            return np.stack(out)

    path, total, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    texts = [f"passage {i}: the nodule measures {i % 30} mm " + "x" * (i % 50) for i in range(total)]
    expected = {chunk_id("doc", t): t for t in texts}
    model = HashModel()
    client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
    store = KnowledgeStore(client, embedder=Embedder("hash-test", model=model), collection="durability")
    got = store.collection.get(include=["documents", "metadatas", "embeddings"])
    ids = got["ids"]
    bad = [i for i, d, m, e in zip(ids, got["documents"], got["metadatas"], got["embeddings"])
           if i not in expected or d != expected[i] or (m or {}).get("key") != "doc" or len(e) != 32
           or not np.allclose(e, model.encode([d])[0], atol=1e-5)]
    hits = store.search("nodule measures 3 mm", k=3) if ids else []
    print(json.dumps({"count": store.count(), "ids": len(ids), "unique": len(set(ids)), "bad": bad[:5],
                      "hits_ok": all(h.id in expected for h in hits)}), flush=True)
    if mode == "write":
        chunks = [Chunk(id=chunk_id("doc", t), text=t, metadata={"key": "doc", "title": "T", "n": i})
                  for i, t in enumerate(texts)]
        store.add_chunks(chunks, batch_size=64, on_batch=lambda seen, added: print("batch", added, flush=True))
        print("done", flush=True)
''')

CACHE_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from vision.encoder import FeatureCache

    root, total, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cache = FeatureCache(root, "astra-test")
    def expected(i):
        return torch.arange(256 * 512, dtype=torch.float32).reshape(256, 512) + i
    present, bad = 0, []
    for i in range(total):
        t = cache.get(f"k{i:04d}")
        if t is None:
            continue
        present += 1
        if t.shape != (256, 512) or not torch.equal(t, expected(i)):
            bad.append(i)
    print(json.dumps({"present": present, "bad": bad[:5]}), flush=True)
    if mode == "write":
        for i in range(total):
            if not cache.path(f"k{i:04d}").exists():
                cache.put(f"k{i:04d}", expected(i))
                print("put", i, flush=True)
        print("done", flush=True)
''')


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "ANONYMIZED_TELEMETRY": "False"}


def _run_and_kill(script: Path, args: list[str], after_lines: int, delay: float) -> dict:
    """Start the writer, wait for its check line and ``after_lines`` progress lines, sleep ``delay``, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, str(script), *args, "write"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=_env())
    try:
        check = json.loads(proc.stdout.readline())
        for _ in range(after_lines):
            line = proc.stdout.readline()
            if not line or line.startswith("done"):
                break
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return check


def _run(script: Path, args: list[str], mode: str) -> tuple[dict, str]:
    r = subprocess.run([sys.executable, str(script), *args, mode], capture_output=True, text=True, cwd=ROOT,
                       env=_env(), timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    return json.loads(lines[0]), lines[-1]


@pytest.mark.slow
@pytest.mark.server
def test_chroma_store_survives_sigkill_mid_write(tmp_path):
    script = tmp_path / "store_writer.py"
    script.write_text(STORE_SCRIPT)
    total = 1500
    args = [str(tmp_path / "chroma"), str(total)]
    rng = random.Random(7)
    seen_counts = []
    for round_ in range(3):
        check = _run_and_kill(script, args, after_lines=rng.randint(1, 4), delay=rng.uniform(0.0, 0.15))
        assert check["bad"] == [] and check["ids"] == check["unique"] == check["count"], check
        assert check["hits_ok"], check
        seen_counts.append(check["count"])
    check, last = _run(script, args, "write")  # resume to the end
    assert check["bad"] == [] and check["ids"] == check["unique"] == check["count"], check
    assert last == "done"
    final, _ = _run(script, args, "check")
    assert final == {"count": total, "ids": total, "unique": total, "bad": [], "hits_ok": True}
    assert seen_counts == sorted(seen_counts)  # killed runs kept their committed batches
    print(f"chroma: entries on disk after each SIGKILL {seen_counts[1:]} + final {final['count']}")


@pytest.mark.slow
def test_feature_cache_survives_sigkill_mid_write(tmp_path):
    script = tmp_path / "cache_writer.py"
    script.write_text(CACHE_SCRIPT)
    total = 60
    args = [str(tmp_path / "features"), str(total)]
    rng = random.Random(3)
    for _ in range(3):
        check = _run_and_kill(script, args, after_lines=rng.randint(1, 8), delay=rng.uniform(0.0, 0.05))
        assert check["bad"] == [], check
    check, last = _run(script, args, "write")
    assert check["bad"] == [] and last == "done"
    final, _ = _run(script, args, "check")
    assert final == {"present": total, "bad": []}
    d = tmp_path / "features" / "astra-test"
    assert len(list(d.glob("*.safetensors"))) == total  # one file per key: no duplicates
    # temp files of killed writers are never read as entries (they do not end in .safetensors)
    leftovers = [p.name for p in d.iterdir() if ".tmp" in p.name]
    assert all(not n.endswith(".safetensors") for n in leftovers)
    print(f"feature cache: {total} entries intact, {len(leftovers)} temp file(s) left by killed writers")


def test_feature_cache_drops_a_partial_entry_instead_of_serving_it(tmp_path):
    import torch

    from vision.encoder import FeatureCache

    cache = FeatureCache(tmp_path, "ns")
    cache.put("a", torch.ones(64, 32))
    data = cache.path("a").read_bytes()
    cache.path("a").write_bytes(data[: len(data) // 2])  # what a non-atomic writer would leave behind
    assert cache.get("a") is None
    assert not cache.path("a").exists()
    cache.put("a", torch.ones(64, 32))
    assert torch.equal(cache.get("a"), torch.ones(64, 32))
