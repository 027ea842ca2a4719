"""``ctscribe evaluate --pred P --ref R --out DIR``: NLG, CE/CRG, region and template metrics → metrics.json + HTML."""

from __future__ import annotations

import argparse

HELP = "score generated reports against reference reports (metrics.json + report.html)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="predictions: CSV/JSONL with id and text (or one column per region)")
    p.add_argument("--ref", required=True, help="references, same format; joined with --pred on the id")
    p.add_argument("--out", required=True, help="output folder for metrics.json and report.html")
    p.add_argument("--id-column", default=None, help="id column name (default: id, AccessionNo, VolumeName, ...)")
    p.add_argument("--text-column", default=None, help="text column name (default: text, report, report_text, ...)")
    p.add_argument("--ref-labels", default=None,
                   help="CSV with id + the 18 CT-RATE finding columns to use as reference labels (default: labeler)")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="bootstrap resamples for 95%% CIs (0: none; default: evaluation.bootstrap = 1000)")
    p.add_argument("--no-nlg", action="store_true", help="skip BLEU/METEOR/ROUGE/CIDEr (no Java needed)")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR")
    p.add_argument("--region-meteor", action=argparse.BooleanOptionalAction, default=None,
                   help="METEOR per region too (default: evaluation.region_meteor = true; cheap since the per-pair "
                        "statistics are aggregated in Python)")
    p.add_argument("--bertscore-model", default=None,
                   help="local model folder for BERTScore (default: evaluation.bertscore_model; unset → skipped)")


def run(args: argparse.Namespace, config) -> int:
    from chatapp.evaluation.evaluate import evaluate_reports, write_outputs
    from chatapp.evaluation.io import read_reports
    from vision.registry import FINDING_NAMES

    preds, pred_regions = read_reports(args.pred, args.id_column, args.text_column)
    refs, ref_regions = read_reports(args.ref, args.id_column, args.text_column)
    ref_labels = None
    if args.ref_labels:
        ref_labels = _read_labels(args.ref_labels, args.id_column, FINDING_NAMES)
    res = evaluate_reports(preds, refs, pred_regions=pred_regions, ref_regions=ref_regions, ref_labels=ref_labels,
                           nlg=not args.no_nlg, meteor=not args.no_meteor,
                           region_meteor=bool(args.region_meteor if args.region_meteor is not None
                                              else config.get("evaluation.region_meteor", True)),
                           n_boot=args.bootstrap if args.bootstrap is not None
                           else int(config.get("evaluation.bootstrap", 1000)),
                           bertscore_model=args.bertscore_model or config.get("evaluation.bertscore_model"))
    paths = write_outputs(res, args.out)
    d = res.to_dict()
    line = " ".join(f"{k}={v:.4f}" for k, v in d["nlg"].items() if v is not None)
    print(f"{d['n_pairs']} pairs  {line}  CE micro-F1={d['ce']['micro']['f1']:.4f} "
          f"macro-F1={d['ce']['macro']['f1']:.4f} CRG={d['ce']['crg'] if d['ce']['crg'] is None else round(d['ce']['crg'], 4)}")
    for note in (d["nlg_note"], d["regions_note"]):
        if note:
            print(f"note: {note}")
    miss = d["ids"]
    if miss["only_in_pred"] or miss["only_in_ref"]:
        print(f"ids without a partner: {len(miss['only_in_pred'])} in --pred, {len(miss['only_in_ref'])} in --ref "
              f"(e.g. {(miss['only_in_pred'] + miss['only_in_ref'])[:3]})")
    print(f"wrote {paths['metrics']} and {paths['html']}")
    return 0


def _read_labels(path: str, id_column: str | None, names) -> dict[str, dict[str, int]]:
    import csv
    from pathlib import Path

    from chatapp.evaluation.io import ID_CANDIDATES, ReportTableError

    with Path(path).open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ReportTableError(f"{path} holds no label rows.")
    cols = rows[0].keys()
    idc = id_column or next((c for c in ID_CANDIDATES if c in cols), None)
    missing = [n for n in names if n not in cols]
    if idc is None or missing:
        raise ReportTableError(f"{path}: a label file needs an id column and the 18 CT-RATE finding columns "
                               f"(missing: {', '.join(missing) or 'id'}).")
    try:
        return {r[idc]: {n: int(float(r[n])) for n in names} for r in rows}
    except ValueError as e:
        raise ReportTableError(f"{path}: label values must be 0 or 1 ({e}).") from e
