"""``ctscribe ingest PATH... [--delete SOURCE]``: add documents to the knowledge store (or remove one source)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "add .txt/.md/.pdf/.html/.jsonl(.gz) documents to the knowledge store; re-runs add only what is new"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to ingest")
    parser.add_argument("--delete", metavar="SOURCE", action="append", default=[],
                        help="remove every chunk of SOURCE (the ingested file path, or 'builtin'); repeatable")
    parser.add_argument("--license", default="", help="license to record for documents that do not state one")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="ingest only the first N documents of each file (quick subsets)")
    parser.add_argument("--batch-size", type=int, default=128, metavar="N",
                        help="chunks embedded and committed together (a killed run loses at most one batch)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the run's statistics as JSON")


def run(args: argparse.Namespace, config: Any) -> int:
    from retrieval.ingest import collect_files, ingest_paths
    from retrieval.store import KnowledgeStore
    from vision.errors import CTScribeError

    if not args.paths and not args.delete:
        raise CTScribeError("nothing to do; give files/folders to ingest or --delete SOURCE")
    if args.limit is not None and args.limit < 1:
        raise CTScribeError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise CTScribeError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.paths:
        collect_files(args.paths)  # fail fast on a bad path before loading the embedder
    store = KnowledgeStore.from_config(config)
    out: dict[str, Any] = {}
    for source in args.delete:
        n = store.delete_source(source)
        out.setdefault("deleted", {})[source] = n
        if not args.json:
            print(f"deleted {n} chunks of {source}")
    if args.paths:
        stats = ingest_paths(store, args.paths, progress=not args.no_progress, batch_size=args.batch_size,
                             license=args.license, limit=args.limit)
        out.update(stats.to_dict())
        if not args.json:
            print(f"{stats.files} files, {stats.documents} documents, {stats.chunks} chunks: {stats.added} added, "
                  f"{stats.skipped} already stored ({stats.seconds:.1f} s, {stats.chunks_per_s:.1f} chunks/s)")
            for w in stats.warnings:
                print(f"warning: {w}", file=sys.stderr)
    out["total_chunks"] = store.count()
    if args.json:
        print(json.dumps(out, indent=2))
    return 0
