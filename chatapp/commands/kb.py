"""``ctscribe kb stats`` and ``ctscribe kb search "query" [--k 5] [--json]``: inspect the knowledge store."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

HELP = "inspect the knowledge store: `kb stats`, `kb search \"query\"` (the built-in guideline base is built on first use)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kb_command", metavar="ACTION", required=True)
    st = sub.add_parser("stats", help="chunk counts by kind and source")
    st.add_argument("--json", action="store_true", help="print as JSON")
    se = sub.add_parser("search", help="the best passages for a query, with citation keys and scores")
    se.add_argument("query", help='e.g. "follow-up of a 7 mm solid nodule, low risk"')
    se.add_argument("--k", type=int, default=None, help="number of hits (default: retrieval.k)")
    se.add_argument("--builtin-only", action="store_true", help="search only the built-in guideline base")
    se.add_argument("--json", action="store_true", help="print hits as JSON")


def run(args: argparse.Namespace, config: Any) -> int:
    from retrieval.store import BUILTIN, KnowledgeStore
    from vision.errors import CTScribeError

    store = KnowledgeStore.from_config(config)
    store.ensure_builtin()
    if args.kb_command == "stats":
        s = store.stats()
        if args.json:
            print(json.dumps(s, indent=2))
        else:
            print(f"collection {s['collection']} ({s['client']}, embedder {s['embedder']}): {s['chunks']} chunks")
            for kind, n in sorted(s["by_kind"].items()):
                print(f"  {kind}: {n}")
            for origin, n in sorted(s["by_origin"].items(), key=lambda kv: -kv[1]):
                print(f"  {n:7d}  {origin}")
        return 0
    k = args.k if args.k is not None else int(config.get("retrieval.k", 5))
    if k < 1:
        raise CTScribeError(f"--k must be >= 1, got {k}")
    hits = store.search(args.query, k=k, where={"kind": BUILTIN} if args.builtin_only else None)
    if args.json:
        print(json.dumps([{"rank": i, **h.to_dict()} for i, h in enumerate(hits, start=1)], indent=2))
        return 0
    if not hits:
        print("no hits (the store is empty)")
    for i, h in enumerate(hits, start=1):
        print(f"[{i}] {h.key}  score {h.score:.3f}")
        print(f"    {h.title}")
        print(f"    {h.source}" + (f" ({h.section})" if h.section else "") + (f"  {h.url}" if h.url else ""))
        print(textwrap.indent(textwrap.fill(" ".join(h.text.split()), 110), "    "))
    return 0
