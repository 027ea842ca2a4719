"""Query latency of the knowledge store at 10k and 100k chunks, against a raw chromadb query in the same run.

Synthetic chunks with precomputed unit vectors (384-d, clustered like real text embeddings) are written straight into
a Chroma collection; then the same query vectors go through

* ``raw``: ``collection.query(query_embeddings=[v], n_results=k)`` (the chromadb baseline), and
* ``adapter``: ``KnowledgeStore.search`` (count, over-fetch, dedupe by citation key, ``Hit`` objects) with an
  embedder stub that returns the precomputed vector, so only the store's own overhead is compared.

The real MiniLM query embedding is timed separately (it does not depend on the store size). Prints p50/p95 per size
and the adapter/raw ratio. Target: adapter p95 <= 30 ms at 100k chunks.

    .venv/bin/python -m bench.bench_retrieval [--quick] [--json PATH]     (the bench.run stage contract)
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from bench.common import BenchResult, Row, Series, bench_main
from retrieval.embed import Embedder
from retrieval.store import KnowledgeStore

DIM = 384


class FixedEmbedder(Embedder):
    """Returns precomputed vectors for known query strings (the store's overhead without the model)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        super().__init__("minilm")
        self.table = table

    def embed_documents(self, texts):  # type: ignore[override]
        return [self.table[t] for t in texts]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic(n: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """``n`` unit vectors (n, 384) scattered around topic centres, like embeddings of a real corpus."""
    idx = rng.integers(0, len(centers), n)
    return _unit(centers[idx] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM) * 8)


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, p))


def run(quick: bool) -> BenchResult:
    """Latency at each size (quick: 2k and 10k chunks, 50 queries)."""
    import chromadb
    from chromadb.config import Settings

    sizes, n_queries, k = ([2_000, 10_000], 50, 5) if quick else ([10_000, 100_000], 300, 5)
    rng = np.random.default_rng(0)
    centers = _unit(rng.standard_normal((200, DIM)).astype(np.float32))
    queries = synthetic(n_queries, rng, centers)
    table = {f"q{i}": v.tolist() for i, v in enumerate(queries)}
    res = BenchResult("retrieval")
    curve: dict[str, list[float]] = {"raw p95": [], "adapter p95": []}
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        client = chromadb.PersistentClient(tmp, settings=Settings(anonymized_telemetry=False))
        store = KnowledgeStore(client, FixedEmbedder(table), collection="bench")
        col = store.collection
        have = 0
        for size in sizes:
            t0 = time.perf_counter()
            while have < size:
                n = min(5000, size - have)
                metas = [{"key": f"doc-{(have + i) // 3}", "title": f"Doc {(have + i) // 3}", "source": "synthetic",
                          "section": "", "url": "", "kind": "ingested", "origin": "bench"} for i in range(n)]
                col.add(ids=[f"c{have + i}" for i in range(n)], embeddings=synthetic(n, rng, centers).tolist(),
                        documents=[f"chunk {have + i}" for i in range(n)], metadatas=metas)
                have += n
            insert_s = time.perf_counter() - t0
            for i in range(10):  # warm-up (index load, caches)
                col.query(query_embeddings=[table[f"q{i}"]], n_results=k)
                store.search(f"q{i}", k=k)
            raw, adapter = [], []
            for i in range(n_queries):  # interleaved so both see the same machine load
                t = time.perf_counter()
                col.query(query_embeddings=[table[f"q{i}"]], n_results=k,
                          include=["documents", "metadatas", "distances"])
                raw.append(time.perf_counter() - t)
                t = time.perf_counter()
                store.search(f"q{i}", k=k)
                adapter.append(time.perf_counter() - t)
            case = f"{size:,} chunks, k={k}"
            base = "raw chromadb collection.query"
            res.rows.append(Row("store query", case, "p50 ms", pct(adapter, 50), pct(raw, 50), base, "", None,
                                n_queries))
            res.rows.append(Row("store query", case, "p95 ms", pct(adapter, 95), pct(raw, 95), base, "<= 30 ms",
                                pct(adapter, 95) <= 30.0 if size >= 100_000 else None, n_queries,
                                f"insert {insert_s:.1f} s"))
            curve["raw p95"].append(pct(raw, 95))
            curve["adapter p95"].append(pct(adapter, 95))
    res.series["retrieval_latency"] = Series("Knowledge-store query latency", "chunks", "p95 ms",
                                             [float(s) for s in sizes], curve, logx=True)

    from retrieval.embed import get_embedder

    emb = get_embedder()
    emb.embed_query("warm up")
    times = []
    for i in range(20 if quick else 50):
        t = time.perf_counter()
        emb.embed_query(f"follow-up of a {i} mm solid nodule in a low-risk patient")
        times.append(time.perf_counter() - t)
    res.rows.append(Row("query embedding", "MiniLM, one query", "p50 ms", pct(times, 50), None, "", "", None,
                        len(times), "independent of store size; add to the store query for end-to-end"))
    res.details.append("adapter = KnowledgeStore.search (2k over-fetch + dedupe by citation key + Hit objects)"
                       " with a stub embedder returning the precomputed vector; raw = collection.query, same vectors,"
                       " interleaved in one process.")
    return res


if __name__ == "__main__":
    sys.exit(bench_main(run))
