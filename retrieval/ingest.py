"""Ingest user documents into the knowledge store: .txt, .md, .pdf, .html and .jsonl / .jsonl.gz (e.g. MedQuAD).

Documents are split with ``langchain_text_splitters`` (markdown by headers first), every chunk gets the metadata an
answer needs to cite it (``key``, ``title``, ``source``, ``section``, ``url``, ``license``, ``ingested_at``,
``origin`` = the resolved file path) and an id that hashes its document key and text. Chunks are committed in
batches, so a run killed midway keeps what it finished and a re-run adds only the rest; a second complete run adds 0.

JSONL records may hold ``question`` + ``answer`` (MedQuAD: ``doc_id, source, url, collection, focus, qid, qtype,
question, answer``) or ``text`` / ``content`` / ``page_content``, with optional ``id``, ``title``, ``source``,
``section``, ``url`` and ``license``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vision.errors import CorruptFileError, InputNotFoundError, UnsupportedFormatError

from .store import Chunk, KnowledgeStore, chunk_id

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".jsonl", ".jsonl.gz")
MEDQUAD_CITATION = "MedQuAD (Ben Abacha A, Demner-Fushman D, BMC Bioinformatics 2019;20:511)"


@dataclass
class SourceDoc:
    """One document (or page / record) before chunking."""

    doc_key: str  # stable identity inside its file (record id, page number, section path)
    text: str
    title: str
    source: str
    section: str = ""
    url: str = ""
    license: str = ""
    key: str = ""  # citation key prefix; chunk keys add "-<n>" when a document gives several chunks
    prefix: str = ""  # repeated in front of every chunk (e.g. the question of a QA pair)


@dataclass
class IngestStats:
    """What one ingestion run did. ``chunks_per_s`` = chunks processed (seen) per wall-clock second."""

    files: int = 0
    documents: int = 0
    chunks: int = 0
    added: int = 0
    skipped: int = 0  # already stored (same content hash)
    bad_records: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chunks_per_s": round(self.chunks_per_s, 1)}


def _slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:n].strip("-") or "doc"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".jsonl.gz" if name.endswith(".jsonl.gz") else path.suffix.lower()


def collect_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand directories (recursively, supported files only) and check every path.

    Raises:
        InputNotFoundError: a path does not exist or a directory holds no supported file.
        UnsupportedFormatError: a file has an unsupported extension.
    """
    files: list[Path] = []
    for p in (Path(x).expanduser() for x in paths):
        if not p.exists():
            raise InputNotFoundError(f"{p} does not exist; give existing files or folders to ingest")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _suffix(f) in SUPPORTED_SUFFIXES)
            if not found:
                raise InputNotFoundError(f"folder {p} holds no {', '.join(SUPPORTED_SUFFIXES)} files")
            files.extend(found)
        elif _suffix(p) in SUPPORTED_SUFFIXES:
            files.append(p)
        else:
            raise UnsupportedFormatError(f"{p.name}: cannot ingest {_suffix(p) or 'files without extension'}; "
                                         f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
    return files


# ---------------------------------------------------------------------------------------------------- loaders
def _load_text(path: Path, license: str) -> Iterator[SourceDoc]:
    text = path.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    title = m.group(1).strip() if m else path.stem.replace("_", " ")
    base = _slug(path.stem)
    if _suffix(path) in (".md", ".markdown"):
        from langchain_text_splitters import MarkdownHeaderTextSplitter

        splitter = MarkdownHeaderTextSplitter([("#", "h1"), ("##", "h2"), ("###", "h3")], strip_headers=False)
        for i, d in enumerate(splitter.split_text(text)):
            section = " > ".join(d.metadata[h] for h in ("h1", "h2", "h3") if h in d.metadata)
            yield SourceDoc(doc_key=f"{path.name}#{i}:{section}", text=d.page_content, title=title,
                            source=path.name, section=section, license=license, key=base)
    else:
        yield SourceDoc(doc_key=path.name, text=text, title=title, source=path.name, license=license, key=base)


def _load_html(path: Path, license: str) -> Iterator[SourceDoc]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript"]):
        tag.decompose()
    h1 = soup.find("h1")
    title = (soup.title.get_text(strip=True) if soup.title else "") or (h1.get_text(strip=True) if h1 else "")
    canonical = soup.find("link", rel="canonical")
    url = canonical.get("href", "") if canonical else ""
    text = re.sub(r"\n\s*\n+", "\n\n", soup.get_text("\n")).strip()
    yield SourceDoc(doc_key=path.name, text=text, title=title or path.stem, source=path.name, url=str(url),
                    license=license, key=_slug(path.stem))


def _load_pdf(path: Path, license: str) -> Iterator[SourceDoc]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or path.stem
        pages = [(i, page.extract_text() or "") for i, page in enumerate(reader.pages, start=1)]
    except (PdfReadError, ValueError, KeyError) as e:
        raise CorruptFileError(f"{path.name} is not a readable PDF ({e}); re-export it or convert it to text") from None
    for i, text in pages:
        if text.strip():
            yield SourceDoc(doc_key=f"{path.name}#page{i}", text=text, title=str(title), source=path.name,
                            section=f"page {i}", license=license, key=f"{_slug(path.stem)}-p{i}")


def _record_doc(rec: dict, path: Path, license: str) -> SourceDoc | None:
    is_medquad = "qid" in rec and "question" in rec and "collection" in rec
    question, answer = str(rec.get("question") or "").strip(), str(rec.get("answer") or "").strip()
    text = answer if question and answer else str(rec.get("text") or rec.get("content") or
                                                   rec.get("page_content") or "").strip()
    if not text:
        return None
    rid = str(rec.get("id") or rec.get("qid") or hashlib.sha256(text.encode()).hexdigest()[:16])
    title = str(rec.get("title") or rec.get("focus") or question[:120] or path.stem)
    source = str(rec.get("source") or path.name)
    if is_medquad:
        source = f"{MEDQUAD_CITATION}, {source}"
    return SourceDoc(doc_key=rid, text=text, title=title, source=source,
                     section=str(rec.get("section") or rec.get("qtype") or ""), url=str(rec.get("url") or ""),
                     license=str(rec.get("license") or ("CC BY 4.0" if is_medquad else license)),
                     key=("medquad-" if is_medquad else f"{_slug(path.stem.replace('.jsonl', ''))}-") + _slug(rid, 60),
                     prefix=f"Q: {question}\nA: " if question and answer else "")


def _load_jsonl(path: Path, license: str, stats: IngestStats) -> Iterator[SourceDoc]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    rec = None
                doc = _record_doc(rec, path, license) if isinstance(rec, dict) else None
                if doc is None:
                    stats.bad_records += 1
                    if stats.bad_records <= 5:
                        stats.warnings.append(f"{path.name}:{lineno}: skipped (not a JSON object with text)")
                    continue
                yield doc
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path.name} is damaged ({e}); re-download or re-compress it") from None


def load_documents(path: Path, license: str = "", stats: IngestStats | None = None) -> Iterator[SourceDoc]:
    """The documents in one file (pages for PDF, header sections for markdown, records for JSONL)."""
    stats = stats if stats is not None else IngestStats()
    suffix = _suffix(path)
    if suffix in (".jsonl", ".jsonl.gz"):
        return _load_jsonl(path, license, stats)
    if suffix == ".pdf":
        return _load_pdf(path, license)
    if suffix in (".html", ".htm"):
        return _load_html(path, license)
    return _load_text(path, license)


def count_documents(path: Path) -> int | None:
    """Quick document count for the progress bar (JSONL lines; None when unknown without parsing)."""
    if _suffix(path) in (".jsonl", ".jsonl.gz"):
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        try:
            with opener(path, "rb") as f:
                return sum(1 for line in f if line.strip())
        except (OSError, EOFError, zlib.error):
            return None
    return None


# ---------------------------------------------------------------------------------------------------- chunking
def chunk_document(doc: SourceDoc, origin: str, splitter: Any) -> list[Chunk]:
    """Split one document; each chunk carries citation metadata and a content-hash id."""
    pieces = [p for p in splitter.split_text(doc.text) if p.strip()]
    out = []
    for i, piece in enumerate(pieces):
        text = doc.prefix + piece
        key = doc.key if len(pieces) == 1 else f"{doc.key}-{i + 1}"
        meta = {"key": key, "title": doc.title, "source": doc.source, "section": doc.section, "url": doc.url,
                "license": doc.license or "unknown", "origin": origin, "kind": "ingested", "part": i}
        out.append(Chunk(id=chunk_id(f"{origin}\x00{doc.doc_key}", text), text=text, metadata=meta))
    return out


def ingest_paths(store: KnowledgeStore, paths: Sequence[str | Path], *, progress: bool = True,
                 batch_size: int = 128, license: str = "", limit: int | None = None,
                 on_batch: Callable[[int, int], None] | None = None) -> IngestStats:
    """Ingest files or folders into ``store``; returns what was done.

    Args:
        store: the knowledge store.
        paths: files or folders (folders are searched recursively for supported files).
        progress: draw a tqdm progress bar on stderr (documents, with chunks added as postfix).
        batch_size: chunks embedded and committed together (a killed run loses at most one batch).
        license: license recorded for documents that do not state one.
        limit: ingest only the first ``limit`` documents of each file (quick subsets, e.g. CI).
        on_batch: called as ``on_batch(chunks_in_batch, added)`` after each committed batch.
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    files = collect_files(paths)
    stats = IngestStats(files=len(files))
    splitter = RecursiveCharacterTextSplitter(chunk_size=store.chunk_size, chunk_overlap=store.chunk_overlap)
    t0 = time.perf_counter()
    for path in files:
        _ingest_file(store, path, stats, splitter, progress=progress, batch_size=batch_size, license=license,
                     limit=limit, on_batch=on_batch)
    stats.seconds = time.perf_counter() - t0
    log.info("ingested %s", stats.to_dict())
    return stats


def _ingest_file(store: KnowledgeStore, path: Path, stats: IngestStats, splitter: Any, *, progress: bool,
                 batch_size: int, license: str, limit: int | None,
                 on_batch: Callable[[int, int], None] | None) -> None:
    """Stream one file's chunks into the store in committed batches, with a tqdm bar over its documents."""
    from tqdm.auto import tqdm

    origin = str(path.resolve())
    total = count_documents(path)
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    bar = tqdm(total=total, desc=path.name, unit="doc", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def batch_done(n: int, added: int) -> None:
        stats.chunks += n
        stats.added += added
        stats.skipped += n - added
        bar.set_postfix(chunks=stats.chunks, added=stats.added, refresh=False)
        if on_batch is not None:
            on_batch(n, added)

    def chunks() -> Iterator[Chunk]:
        for j, doc in enumerate(load_documents(path, license, stats)):
            if limit is not None and j >= limit:
                break
            stats.documents += 1
            yield from chunk_document(doc, origin, splitter)
            bar.update(1)

    try:
        store.add_chunks(chunks(), batch_size=batch_size, on_batch=batch_done)
    finally:
        bar.close()
