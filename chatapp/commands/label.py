"""``ctscribe label IN --out OUT``: the 18 CT-RATE finding labels of each report (open rule labeler)."""

from __future__ import annotations

import argparse

HELP = "label reports with the 18 CT-RATE findings (CSV with id + 18 columns of 0/1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="CSV/JSONL with id and text (or one column per region)")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--id-column", default=None)
    p.add_argument("--text-column", default=None)
    p.add_argument("--strict-uncertain", action="store_true",
                   help="count uncertain mentions ('?', 'cannot be excluded') as negative (default: positive)")


def run(args: argparse.Namespace, config) -> int:
    from chatapp.evaluation.io import read_reports, write_table
    from chatapp.evaluation.labeler import label_reports
    from vision.registry import FINDING_NAMES

    texts, _ = read_reports(args.input, args.id_column, args.text_column)
    labels = label_reports(texts.values(), uncertain_positive=not args.strict_uncertain)
    rows = [{"id": i, **lab} for i, lab in zip(texts, labels)]
    write_table(args.out, rows, ["id", *FINDING_NAMES])
    print(f"labelled {len(rows)} reports → {args.out}")
    return 0
