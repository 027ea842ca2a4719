"""Cross-validate the open labeler on the CT-CLIP 800-report training set (read from ../shared at run time only).

The labeler is rules, so "training" means writing rules while reading errors. Reports are put in 5 folds by row
index (``i % 5``). Fold 4 has never been inspected by anyone writing rules; report it as the held-out figure.
Rounds so far (macro-F1 per fold 0/1/2/3/4):

- first rules, written reading folds 0-3: 0.955/0.948/0.941/0.948 | 0.926
- split A, errors read on folds 0-1 only: 0.961/0.954 (read) | 0.941/0.944/0.932 (not read in this round)
- split B, errors read on folds 2-3 only: 0.944/0.947 (read) | 0.963/0.954/0.934 (not read in this round)

A learned layer (per-finding logistic regression on rule outputs + n-grams of the finding's sentences, trained
inside each fold) scored 0.934-0.943 mean macro-F1 in 5-fold CV, never above the rules alone, so none is shipped.
The script prints per-fold macro/micro F1, per-label P/R/F1 pooled over folds, and the speed on one core.

Never-seen reports (2026-11-30, scored once, after all rules were written; no rule was changed after it): CT-CLIP's
own validation split of the same radiologist-labelled data (repository ibrahimethemhamamci/CT-CLIP,
``text_classifier/data/val.csv`` at commit 70ae964; its ``test.csv`` holds the same 200 reports under other ids) is
not in ../shared and is not shipped. Of its 200 reports, 198 are distinct and 4 also occur in train.csv; on the
other 194: macro-F1 0.963 (95 % bootstrap CI 0.949-0.974, 2,000 resamples of reports), micro-F1 0.964; weakest
labels pericardial effusion 0.897 (n=14), bronchiectasis 0.909 (n=23), lung opacity 0.910 (n=67). Pooled with
fold 4 (354 never-read reports): macro-F1 0.954. ``--holdout FILE`` reproduces it for whoever has the file:

    python -m chatapp.evaluation.labeler_cv [--csv PATH] [--errors LABEL] [--folds 0,1,2,3]
    python -m chatapp.evaluation.labeler_cv --holdout val_unseen.csv   # never-seen labelled reports, scored whole
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from chatapp.evaluation.labeler import find_mentions, label_reports
from vision.registry import FINDING_NAMES

# ../shared/data next to a checkout (read at run time only; nothing from it is shipped)
DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ct-rate_ctclip-text-classifier" / "train.csv"
N_FOLDS = 5


def load(csv: Path):
    import pandas as pd

    d = pd.read_csv(csv)
    return list(d["report_text"].fillna("")), d[list(FINDING_NAMES)].to_numpy(dtype=int)


def prf(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column precision, recall, F1 of binary matrices (N, L); 0/0 counts as 1 (nothing to find, nothing found)."""
    tp = (y & p).sum(0)
    fp = ((1 - y) & p).sum(0)
    fn = (y & (1 - p)).sum(0)
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    return prec, rec, f1


def cross_validate(texts: list[str], y: np.ndarray) -> dict:
    pred = np.array([[r[n] for n in FINDING_NAMES] for r in label_reports(texts)], dtype=int)
    folds = np.arange(len(texts)) % N_FOLDS
    per_fold = []
    for k in range(N_FOLDS):
        m = folds == k
        _, _, f1 = prf(y[m], pred[m])
        tp = (y[m] & pred[m]).sum()
        micro = 2 * tp / max(1, y[m].sum() + pred[m].sum())
        per_fold.append({"fold": k, "macro_f1": float(f1.mean()), "micro_f1": float(micro)})
    p, r, f1 = prf(y, pred)
    return {"pred": pred, "per_fold": per_fold, "precision": p, "recall": r, "f1": f1}


def speed(texts: list[str], *, cached: bool = True) -> float:
    """Reports per CPU-second on one core (the labeler is single-threaded), the sentence cache cleared first;
    ``cached=False`` bypasses the cache (every sentence analysed anew)."""
    from chatapp.evaluation import labeler

    labeler._sentence_mentions.cache_clear()
    fn = labeler._sentence_mentions
    if not cached:
        labeler._sentence_mentions = fn.__wrapped__
    try:
        t0 = time.process_time()
        label_reports(texts)
        return len(texts) / (time.process_time() - t0)
    finally:
        labeler._sentence_mentions = fn


def _print_table(p: np.ndarray, r: np.ndarray, f1: np.ndarray, y: np.ndarray) -> None:
    print(f"{'label':36s} {'P':>6s} {'R':>6s} {'F1':>6s} {'n':>4s}")
    for j, n in enumerate(FINDING_NAMES):
        print(f"{n:36s} {p[j]:6.3f} {r[j]:6.3f} {f1[j]:6.3f} {y[:, j].sum():4d}")


def score_holdout(paths: list[Path]) -> int:
    """Print macro/micro F1 per file and pooled, and pooled per-label P/R/F1, for labelled reports outside the CV set."""
    texts: list[str] = []
    ys = []
    for p in paths:
        t, y = load(p)
        pred = np.array([[r[n] for n in FINDING_NAMES] for r in label_reports(t)], dtype=int)
        _, _, f1 = prf(y, pred)
        micro = 2 * (y & pred).sum() / max(1, y.sum() + pred.sum())
        print(f"{p}: {len(t)} reports, macro-F1 {f1.mean():.4f}, micro-F1 {micro:.4f}")
        texts += t
        ys.append(y)
    y = np.concatenate(ys)
    pred = np.array([[r[n] for n in FINDING_NAMES] for r in label_reports(texts)], dtype=int)
    p, r, f1 = prf(y, pred)
    micro = 2 * (y & pred).sum() / max(1, y.sum() + pred.sum())
    print(f"pooled: {len(texts)} reports, macro-F1 {f1.mean():.4f}, micro-F1 {micro:.4f}")
    _print_table(p, r, f1, y)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--errors", default=None, help="print errors of this label (dev folds only)")
    ap.add_argument("--folds", default="0,1,2,3", help="folds whose errors may be printed")
    ap.add_argument("--holdout", type=Path, nargs="*", default=None,
                    help="score these labelled CSVs (same columns as --csv) as a whole, never-seen set: no folds, "
                         "no error listing")
    args = ap.parse_args(argv)
    if args.holdout:
        return score_holdout(args.holdout)
    texts, y = load(args.csv)
    res = cross_validate(texts, y)
    for f in res["per_fold"]:
        print(f"fold {f['fold']}: macro-F1 {f['macro_f1']:.4f}  micro-F1 {f['micro_f1']:.4f}")
    print(f"mean over folds: macro-F1 {np.mean([f['macro_f1'] for f in res['per_fold']]):.4f}")
    _print_table(res["precision"], res["recall"], res["f1"], y)
    print(f"speed: {speed(texts, cached=False):.0f} reports/s without the sentence cache, "
          f"{speed(texts):.0f} reports/s from a cold cache (CPU time, one core)")
    if args.errors:
        j = FINDING_NAMES.index(args.errors)
        dev = {int(k) for k in args.folds.split(",")}
        for i in range(len(texts)):
            if i % N_FOLDS in dev and res["pred"][i, j] != y[i, j]:
                ms = [m for m in find_mentions(texts[i]) if m.finding == args.errors]
                print(f"--- #{i} gold={y[i, j]} pred={res['pred'][i, j]}")
                for m in ms:
                    print(f"   neg={int(m.negated)} unc={int(m.uncertain)} | {m.sentence.strip()[:220]}")
                if not ms:
                    print("   (no mention)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
