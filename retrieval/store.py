"""One typed adapter over a Chroma collection: the knowledge store the report engine and the chat cite from.

The Chroma client is injected (``PersistentClient`` under ``data_dir/chroma`` by default, ``HttpClient`` for a
``chroma run`` server, ``EphemeralClient`` in tests). Embeddings always come from our offline ``Embedder``; the
collection uses cosine space, and ``Hit.score`` is the cosine similarity clipped to [0, 1] (1 = same direction).

Every chunk carries a stable citation ``key`` plus ``title``, ``source``, ``section``, ``url``, ``license``,
``ingested_at``, ``origin`` (the file it came from, or ``"builtin"``) and ``kind`` (``builtin`` | ``ingested``).
Chunk ids are content hashes, so adding the same chunk twice is a no-op.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from vision.errors import StoreError

from .embed import Embedder, get_embedder
from .kb import KNOWLEDGE_DIR, KNOWLEDGE_LICENSE, Entry, load_entries

if TYPE_CHECKING:  # pragma: no cover
    from chatapp.config import Config
    from chatapp.schema import Citation

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "ctscribe-kb"
BUILTIN = "builtin"
_META_FIELDS = ("key", "title", "source", "section", "url", "license", "ingested_at", "origin", "kind")


def chunk_id(doc_key: str, text: str) -> str:
    """Content-hash id of a chunk: the same text of the same document always gets the same id (32 hex chars)."""
    return hashlib.sha256(f"{doc_key}\x00{text}".encode()).hexdigest()[:32]


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


@dataclass
class Chunk:
    """A passage ready to store. ``metadata`` values must be str/int/float/bool (Chroma's rule)."""

    id: str
    text: str
    metadata: dict[str, Any]
    embed: str | None = None  # text to embed when it differs from the stored text (e.g. with retrieval keywords)


@dataclass
class Hit:
    """One retrieval result with everything an answer needs to cite it as [n].

    Attributes:
        key: stable citation key. title, source, section, url: what the reference list shows.
        text: the passage. score: cosine similarity in [0, 1]. metadata: all stored metadata. id: chunk id.
    """

    key: str
    title: str
    source: str
    section: str
    url: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def to_citation(self, n: int) -> Citation:
        """This hit as the ``[n]`` entry of a report's or answer's reference list."""
        from chatapp.schema import Citation

        return Citation(n=n, key=self.key, title=self.title, source=self.source, section=self.section, url=self.url,
                        text=self.text, score=round(self.score, 4))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "source": self.source, "section": self.section,
                "url": self.url, "score": round(self.score, 4), "text": self.text, "id": self.id,
                "metadata": dict(self.metadata)}


def builtin_chunks(entries: Sequence[Entry] | None = None, chunk_size: int = 800, chunk_overlap: int = 100
                   ) -> list[Chunk]:
    """Chunks of the in-house knowledge base: one per entry, split only if an entry is longer than ``chunk_size``
    (MiniLM truncates at 256 word pieces); every part keeps the entry's citation key."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    out: list[Chunk] = []
    for e in entries if entries is not None else load_entries(KNOWLEDGE_DIR):
        text = e.embed_text()
        parts = [text] if len(text) <= chunk_size else [
            (p if i == 0 else f"{e.title}. {p}") for i, p in enumerate(splitter.split_text(text))]
        kw = f"\nKeywords: {e.keywords}" if e.keywords else ""
        for i, part in enumerate(parts):
            shown = part[: -len(kw)] if kw and part.endswith(kw) else part
            meta = {"key": e.key, "title": e.title, "source": e.source + (f". doi:{e.doi}" if e.doi else ""),
                    "section": e.section, "url": e.url, "license": KNOWLEDGE_LICENSE, "origin": BUILTIN,
                    "kind": BUILTIN, "part": i, "findings": "; ".join(e.findings), "file": e.file}
            out.append(Chunk(id=chunk_id(e.key, part), text=shown, metadata=meta, embed=part))
    return out


class KnowledgeStore:
    """The knowledge store: add chunks, search with citations, stats, delete by source.

    Args:
        client: a chromadb client (``PersistentClient``, ``HttpClient`` or ``EphemeralClient``).
        embedder: the offline ``Embedder`` (default: the process-wide MiniLM).
        collection: Chroma collection name (3-512 chars of ``[a-zA-Z0-9._-]``).
        chunk_size, chunk_overlap: characters, for splitting long built-in entries.
    """

    def __init__(self, client: Any, embedder: Embedder | None = None, collection: str = DEFAULT_COLLECTION,
                 chunk_size: int = 800, chunk_overlap: int = 100) -> None:
        self.client = client
        self.embedder = embedder if embedder is not None else get_embedder()
        self.collection_name = collection
        self.chunk_size = int(chunk_size)
        self.chunk_overlap = int(chunk_overlap)
        self._collection: Any = None
        self._builtin_checked = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Config) -> KnowledgeStore:
        """Build from the ``retrieval`` config section: ``HttpClient`` when ``server_url`` is set, else a
        ``PersistentClient`` under ``config.data_dir / "chroma"``."""
        import chromadb
        from chromadb.config import Settings

        sec = config.section("retrieval")
        settings = Settings(anonymized_telemetry=False)
        url = sec.get("server_url")
        if url:
            u = urlparse(str(url))
            if not u.hostname:
                raise StoreError(f"retrieval.server_url {url!r} is not a URL; use e.g. http://127.0.0.1:8000")
            try:
                client = chromadb.HttpClient(host=u.hostname, port=u.port or (443 if u.scheme == "https" else 8000),
                                             ssl=u.scheme == "https", settings=settings)
            except Exception as e:  # noqa: BLE001 - chromadb raises plain exceptions when the server is down
                raise StoreError(f"cannot reach the Chroma server at {url} ({e}); start it with `chroma run --host "
                                 "127.0.0.1 --port PORT --path DIR` or unset retrieval.server_url") from None
        else:
            path = config.data_dir / "chroma"
            path.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(path), settings=settings)
        return cls(client, embedder=get_embedder(sec.get("embedder") or "minilm"),
                   collection=sec.get("collection") or DEFAULT_COLLECTION,
                   chunk_size=sec.get("chunk_size", 800), chunk_overlap=sec.get("chunk_overlap", 100))

    @property
    def collection(self) -> Any:
        """The Chroma collection (created on first use, cosine space, our embedding function attached)."""
        if self._collection is None:
            try:
                self._collection = self.client.get_or_create_collection(
                    name=self.collection_name, embedding_function=self.embedder.chroma(),
                    configuration={"hnsw": {"space": "cosine"}})
            except ValueError as e:
                raise StoreError(f"cannot open collection {self.collection_name!r}: {e}") from None
        return self._collection

    # ------------------------------------------------------------------ writing
    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored."""
        if not ids:
            return set()
        return set(self.collection.get(ids=list(ids), include=[])["ids"])

    def add_chunks(self, chunks: Iterable[Chunk], batch_size: int = 128,
                   on_batch: Callable[[int, int], None] | None = None) -> int:
        """Embed and store the chunks that are not stored yet; returns how many were added.

        Each batch is committed before the next is embedded, so an interrupted run keeps its finished batches and a
        re-run adds only what is missing. ``on_batch(seen, added)`` is called after each committed batch.
        """
        added = 0
        batch: dict[str, Chunk] = {}

        def flush() -> int:
            have = self.existing_ids(list(batch))
            new_ids = [i for i in batch if i not in have]
            if new_ids:
                stamp = now_iso()
                new = [batch[i] for i in new_ids]
                vecs = self.embedder.embed_documents([c.embed or c.text for c in new])
                metas = [{**{k: v for k, v in c.metadata.items() if v is not None},
                          "ingested_at": c.metadata.get("ingested_at") or stamp} for c in new]
                self.collection.add(ids=new_ids, embeddings=vecs, documents=[c.text for c in new], metadatas=metas)
            if on_batch is not None:
                on_batch(len(batch), len(new_ids))
            batch.clear()
            return len(new_ids)

        for c in chunks:
            batch[c.id] = c
            if len(batch) >= batch_size:
                added += flush()
        if batch:
            added += flush()
        return added

    def ensure_builtin(self, directory: Path | str = KNOWLEDGE_DIR) -> int:
        """Build (or bring up to date) the in-house knowledge base; returns how many chunks were added.

        Idempotent and fast when already built (one metadata query); stale built-in chunks (edited entries) are
        removed. Checked once per store object.
        """
        if self._builtin_checked:
            return 0
        chunks = builtin_chunks(load_entries(directory), self.chunk_size, self.chunk_overlap)
        want = {c.id for c in chunks}
        have = set(self.collection.get(where={"kind": BUILTIN}, include=[])["ids"])
        stale = sorted(have - want)
        if stale:
            self.collection.delete(ids=stale)
        added = self.add_chunks([c for c in chunks if c.id not in have])
        self._builtin_checked = True
        if added or stale:
            log.info("knowledge base: %d built-in chunks added, %d stale removed", added, len(stale))
        return added

    def delete_source(self, source: str) -> int:
        """Delete every chunk whose ``origin`` (file path as ingested, or ``builtin``) or ``source`` equals
        ``source``; returns how many were deleted."""
        names = {str(source)}
        p = Path(source).expanduser()
        if p.exists():
            names.add(str(p.resolve()))
        ids: set[str] = set()
        for name in names:
            for fieldname in ("origin", "source"):
                ids.update(self.collection.get(where={fieldname: name}, include=[])["ids"])
        if ids:
            self.collection.delete(ids=sorted(ids))
        if BUILTIN in names:
            self._builtin_checked = False
        return len(ids)

    # ------------------------------------------------------------------ reading
    def count(self) -> int:
        return int(self.collection.count())

    def search(self, query: str, k: int = 5, where: dict | None = None) -> list[Hit]:
        """The ``k`` best passages for ``query``, best first, at most one per citation key.

        Args:
            query: free text.
            k: number of hits (>= 1).
            where: Chroma metadata filter, e.g. ``{"kind": "builtin"}``.
        """
        return self.search_batch([query], k=k, where=where)[0]

    def search_batch(self, queries: Sequence[str], k: int = 5, where: dict | None = None) -> list[list[Hit]]:
        """``search`` for several queries at once: one embedding batch and one Chroma query (a report's sentences).

        Returns one list of hits per query, in order.
        """
        if k < 1:
            raise StoreError(f"k must be >= 1, got {k}")
        if not queries or any(not q or not q.strip() for q in queries):
            raise StoreError("a query is empty; type what you are looking for")
        vecs = self.embedder.embed_documents(list(queries))
        # over-fetch a little so that de-duplicating parts of one long entry still leaves k distinct keys
        res = self.collection.query(query_embeddings=vecs, n_results=2 * k, where=where,
                                    include=["documents", "metadatas", "distances"])
        return [self._hits(res, i, k) for i in range(len(queries))]

    @staticmethod
    def _hits(res: dict, i: int, k: int) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        for cid, doc, meta, dist in zip(res["ids"][i], res["documents"][i], res["metadatas"][i],
                                        res["distances"][i]):
            meta = dict(meta or {})
            key = str(meta.get("key") or cid)
            if key in seen:
                continue
            seen.add(key)
            hits.append(Hit(key=key, title=str(meta.get("title", "")), source=str(meta.get("source", "")),
                            section=str(meta.get("section", "")), url=str(meta.get("url", "")), text=doc or "",
                            score=max(0.0, min(1.0, 1.0 - float(dist))), metadata=meta, id=cid))
            if len(hits) == k:
                break
        return hits

    def stats(self) -> dict[str, Any]:
        """Chunk counts in total, by kind and by origin; the collection, client and embedder in use."""
        by_kind: dict[str, int] = {}
        by_origin: dict[str, int] = {}
        total = self.count()
        page = 5000
        for offset in range(0, total, page):
            metas = self.collection.get(include=["metadatas"], limit=page, offset=offset)["metadatas"]
            for m in metas:
                m = m or {}
                by_kind[str(m.get("kind", "?"))] = by_kind.get(str(m.get("kind", "?")), 0) + 1
                by_origin[str(m.get("origin", "?"))] = by_origin.get(str(m.get("origin", "?")), 0) + 1
        return {"collection": self.collection_name, "chunks": total, "by_kind": by_kind, "by_origin": by_origin,
                "embedder": self.embedder.name, "client": type(self.client).__name__}

    # ------------------------------------------------------------------ LangChain
    def as_retriever(self, k: int = 5, where: dict | None = None) -> Any:
        """A LangChain ``BaseRetriever`` over ``search``: documents carry the hit's citation fields and score."""
        from .langchain import KnowledgeRetriever

        return KnowledgeRetriever(store=self, k=k, where=where)

    def as_vectorstore(self) -> Any:
        """The same collection as a ``langchain_chroma.Chroma`` vector store (note: its scores are distances)."""
        from langchain_chroma import Chroma

        _ = self.collection  # create it with our configuration first (cosine space, our embedding function)
        return Chroma(client=self.client, collection_name=self.collection_name,
                      embedding_function=self.embedder.langchain())
