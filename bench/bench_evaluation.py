"""Benchmark: the evaluation suite on 1,564 report pairs against pycocoevalcap alone, in the same process.

Pairs: 1,564 (the CT-RATE validation size) hypothesis/reference pairs built from the 800 real CT-RATE reports in
``../shared/data/ct-rate_ctclip-text-classifier`` (hypothesis ``i % 800``, reference ``(7 i + 3) % 800``; never the
same report), so both sides have real report length (mean ~1,800 characters) and vocabulary.

- **ours**: ``chatapp.evaluation.metrics.nlg_scores`` (PTB tokenizer, BLEU-1..4, pipelined METEOR 1.5, ROUGE-L,
  CIDEr) + the rule labeler on both sides + clinical-efficacy P/R/F1 and CRG (``chatapp.evaluation.ce``).
- **full suite**: ``chatapp.evaluation.evaluate_reports`` with its defaults (whole-report NLG with 1,000-resample
  bootstrap CIs, per-region BLEU/ROUGE-L/CIDEr + CE through the router, template collapse; per-region METEOR is
  opt-in and off), timed once after the other two. The load average is printed with each row: the
  machine is shared, and the figures scale with it.
- **baseline**: pycocoevalcap alone: ``PTBTokenizer`` → ``Bleu(4)``, ``Meteor()``, ``Rouge()``, ``Cider()`` as
  its ``COCOEvalCap`` runs them (NLG only; it has no clinical metrics).

Target: <= 60 s total. Both are slow (METEOR is Java), so each is timed ``repeat`` times (5 in full mode).

    .venv/bin/python -m bench.bench_evaluation [--quick] [--json out.json] [--repeat N]
"""

from __future__ import annotations

import csv
import os
import sys
import time

import numpy as np

from bench.common import CTRATE_REPORTS, BenchResult, Row, bench_main

N_PAIRS = 1564


def load_pairs(n: int) -> tuple[list[str], list[str]]:
    with open(CTRATE_REPORTS, newline="", encoding="utf-8") as f:
        texts = [r["report_text"] for r in csv.DictReader(f)]
    m = len(texts)
    return [texts[i % m] for i in range(n)], [texts[(7 * i + 3) % m] for i in range(n)]


def ours(hyps: list[str], refs: list[str]) -> dict:
    from chatapp.evaluation.ce import ce_metrics
    from chatapp.evaluation.labeler import label_reports
    from chatapp.evaluation.metrics import nlg_scores
    from vision.registry import FINDINGS

    names = [f.name for f in FINDINGS]
    nlg = nlg_scores(hyps, refs)
    lh, lr = label_reports(hyps), label_reports(refs)
    y_pred = np.array([[d.get(n, 0) for n in names] for d in lh])
    y_true = np.array([[d.get(n, 0) for n in names] for d in lr])
    return {"nlg": nlg.scores, "ce": ce_metrics(y_true, y_pred, names)}


def baseline(hyps: list[str], refs: list[str]) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r}] for i, r in enumerate(refs)})
    res = tok.tokenize({i: [{"caption": h}] for i, h in enumerate(hyps)})
    out = {}
    for name, scorer in (("BLEU", Bleu(4)), ("METEOR", Meteor()), ("ROUGE-L", Rouge()), ("CIDEr", Cider())):
        score, _ = scorer.compute_score(gts, res) if name != "BLEU" else scorer.compute_score(gts, res, verbose=0)
        out[name] = score
        if name == "METEOR":
            scorer.close() if hasattr(scorer, "close") else None
    return out


def run(quick: bool) -> BenchResult:
    res = BenchResult("evaluation")
    if not CTRATE_REPORTS.exists():
        res.skipped = "no input: ../shared/data/ct-rate_ctclip-text-classifier is absent"
        return res
    n = 40 if quick else N_PAIRS
    rep = 1 if quick else int(os.environ.get("BENCH_EVAL_REPEAT", "5"))
    hyps, refs = load_pairs(n)
    a: list[float] = []
    b: list[float] = []
    so = sb = None
    for _ in range(rep):  # interleaved: the machine is shared
        t0 = time.perf_counter()
        so = ours(hyps, refs)
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sb = baseline(hyps, refs)
        b.append(time.perf_counter() - t0)
    c: list[float] = []
    if not quick:
        from chatapp.evaluation.evaluate import evaluate_reports

        for _ in range(1):  # once: it is the slowest stage (minutes on a loaded 2-core machine)
            t0 = time.perf_counter()
            full = evaluate_reports(hyps, refs)
            c.append(time.perf_counter() - t0)
        res.details.append(f"full evaluate_reports: METEOR {full.nlg['METEOR']:.4f}; stage seconds "
                           f"{ {k: round(v, 1) for k, v in full.seconds.items()} }")
    load = [round(x, 2) for x in os.getloadavg()]
    ma, mb = float(np.median(a)), float(np.median(b))
    res.rows.append(Row("evaluation suite", f"{n:,} CT-RATE report pairs: NLG + labeler + CE", "median s", ma, mb,
                        "pycocoevalcap alone (PTB, BLEU, METEOR, ROUGE-L, CIDEr)", "<= 60 s", ma <= 60, rep,
                        f"runs ours {[round(x, 1) for x in a]}, base {[round(x, 1) for x in b]}; load {load}"))
    if c:
        mc = float(np.median(c))
        res.rows.append(Row("evaluation suite (full)", f"{n:,} pairs: evaluate_reports defaults (NLG + CIs, regions, "
                            "CE/CRG, templates)", "median s", mc, mb, "pycocoevalcap alone", "<= 60 s", mc <= 60, 1,
                            f"runs {[round(x, 1) for x in c]}; load {load}"))
    meteor_ok = abs(so["nlg"]["METEOR"] - sb["METEOR"]) < 1e-4
    res.details.append(f"parity: METEOR ours {so['nlg']['METEOR']:.4f} vs pycocoevalcap {sb['METEOR']:.4f} "
                       f"({'identical' if meteor_ok else 'DIFFERENT'}); CIDEr {so['nlg']['CIDEr']:.4f} vs "
                       f"{sb['CIDEr']:.4f}; BLEU-4 {so['nlg']['BLEU-4']:.4f} vs {sb['BLEU'][3]:.4f}")
    return res


if __name__ == "__main__":
    sys.exit(bench_main(run))
