"""The in-house knowledge base: markdown entries in ``retrieval/knowledge/*.md``, each with a stable citation key.

Entry convention (one file holds several entries)::

    ## fleischner-2017-solid-single: Single solid nodule follow-up by size and risk
    - source: Fleischner Society 2017 (MacMahon H et al.), Radiology 2017;284(1):228-243
    - doi: 10.1148/radiol.2017161659
    - url: https://doi.org/10.1148/radiol.2017161659
    - section: Solid nodules, single
    - findings: Lung nodule

    Body text in the project's own words ...

The heading holds ``key: title``; the ``- field: value`` lines right below it are metadata (``source`` is required);
everything after them up to the next ``## `` heading is the body. Keys are lowercase ``[a-z0-9-]`` and unique across
all files. Lines starting with ``# `` (file titles) and text before the first entry are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vision.errors import StoreError

KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
KNOWLEDGE_LICENSE = "Apache-2.0 (ctscribe in-house summaries; cite the original guideline)"
_HEADING = re.compile(r"^##\s+([a-z0-9][a-z0-9-]*[a-z0-9])\s*:\s*(.+?)\s*$")
_FIELD = re.compile(r"^-\s+([a-z_]+)\s*:\s*(.*?)\s*$")
_KNOWN_FIELDS = {"source", "doi", "url", "section", "findings", "keywords"}


@dataclass(frozen=True)
class Entry:
    """One citable knowledge-base entry.

    Attributes:
        key: stable citation key (e.g. ``"fleischner-2017-solid-single"``).
        title: one-line title.
        source: guideline / publication with year and journal.
        body: the entry text (the project's own words).
        doi, url, section: citation details (``url`` defaults to the DOI resolver when a DOI is given).
        findings: CT-RATE finding names the entry is about (from ``vision.registry.FINDINGS``).
        keywords: extra retrieval terms (synonyms, abbreviations); embedded, not shown.
        file: the markdown file name it came from.
    """

    key: str
    title: str
    source: str
    body: str
    doi: str = ""
    url: str = ""
    section: str = ""
    findings: tuple[str, ...] = field(default=())
    keywords: str = ""
    file: str = ""

    def embed_text(self) -> str:
        """The text that is embedded and stored: title, section, keywords and body."""
        head = self.title + (f" ({self.section})" if self.section else "")
        kw = f"\nKeywords: {self.keywords}" if self.keywords else ""
        return f"{head}.\n{self.body}{kw}"


def parse_markdown(text: str, file: str = "<string>") -> list[Entry]:
    """Parse entries from one markdown file (see the module docstring for the convention).

    Raises:
        StoreError: an entry lacks a ``source`` or a body, or has an unknown field.
    """
    entries: list[Entry] = []
    cur: dict | None = None

    def close() -> None:
        if cur is None:
            return
        body = "\n".join(cur["body"]).strip()
        if not cur["meta"].get("source"):
            raise StoreError(f"{file}: entry {cur['key']!r} has no '- source:' line; every entry must cite its source")
        if not body:
            raise StoreError(f"{file}: entry {cur['key']!r} has no body text")
        m = cur["meta"]
        doi = m.get("doi", "")
        findings = tuple(f.strip() for f in m.get("findings", "").split(";") if f.strip())
        entries.append(Entry(key=cur["key"], title=cur["title"], source=m["source"], body=body, doi=doi,
                             url=m.get("url") or (f"https://doi.org/{doi}" if doi else ""),
                             section=m.get("section", ""), findings=findings, keywords=m.get("keywords", ""),
                             file=file))

    for line in text.splitlines():
        h = _HEADING.match(line)
        if h:
            close()
            cur = {"key": h.group(1), "title": h.group(2), "meta": {}, "body": [], "in_meta": True}
            continue
        if line.startswith("## "):
            raise StoreError(f"{file}: heading {line!r} must look like '## key-in-kebab-case: Title'")
        if cur is None:
            continue
        f = _FIELD.match(line)
        if cur["in_meta"] and f:
            name = f.group(1)
            if name not in _KNOWN_FIELDS:
                raise StoreError(f"{file}: entry {cur['key']!r} has unknown field {name!r}; "
                                 f"use one of {sorted(_KNOWN_FIELDS)}")
            cur["meta"][name] = f.group(2)
            continue
        if cur["in_meta"] and not line.strip():
            continue
        cur["in_meta"] = False
        cur["body"].append(line)
    close()
    return entries


def load_entries(directory: Path | str = KNOWLEDGE_DIR) -> list[Entry]:
    """All entries of the knowledge base, in file-name then file order.

    Raises:
        StoreError: two entries share a key, or the directory holds no entries.
    """
    d = Path(directory)
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for path in sorted(d.glob("*.md")):
        for e in parse_markdown(path.read_text(encoding="utf-8"), file=path.name):
            if e.key in seen:
                raise StoreError(f"knowledge key {e.key!r} is used in both {seen[e.key]} and {path.name}; "
                                 "keys must be unique")
            seen[e.key] = path.name
            entries.append(e)
    if not entries:
        raise StoreError(f"no knowledge entries found in {d}; the package may be incomplete (reinstall ctscribe)")
    return entries
