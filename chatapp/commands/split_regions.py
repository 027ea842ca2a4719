"""``ctscribe split-regions IN --out OUT``: route report sentences to the 10 RadGenome-ChestCT regions."""

from __future__ import annotations

import argparse

HELP = "split reports into the 10 RadGenome regions (CSV with id + one column per region)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="CSV/JSONL with id and text")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--id-column", default=None)
    p.add_argument("--text-column", default=None)


def run(args: argparse.Namespace, config) -> int:
    from chatapp.evaluation.io import read_reports, write_table
    from chatapp.evaluation.router import split_regions
    from vision.registry import REGION_KEYS

    texts, _ = read_reports(args.input, args.id_column, args.text_column)
    rows = []
    for i, t in texts.items():
        reg = split_regions(t)
        rows.append({"id": i, **{k: " ".join(v) for k, v in reg.items()}})
    write_table(args.out, rows, ["id", *REGION_KEYS])
    print(f"split {len(rows)} reports → {args.out}")
    return 0
