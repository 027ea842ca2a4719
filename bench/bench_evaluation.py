"""Benchmark: the whole evaluation suite on 1,564 report pairs against pycocoevalcap alone, in the same process.

Pairs: 1,564 (the CT-RATE validation size) hypothesis/reference pairs built from the 800 real CT-RATE reports in
``../shared/data/ct-rate_ctclip-text-classifier`` (hypothesis ``i % 800``, reference ``(7 i + 3) % 800``; never the
same report, every pair distinct; each report text occurs about twice per side).

- **ours (full suite)**: ``chatapp.evaluation.evaluate_reports`` with the defaults of ``ctscribe evaluate``: PTB
  tokenizer, BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr on whole reports with 1,000-resample bootstrap CIs, the same
  NLG metrics (METEOR included) per region through the router, the rule labeler on both sides, CE P/R/F1 + CRG with
  CIs, per-region CE, template collapse. Java start-up (tokenizer, two METEOR JVMs) is included.
- **baseline**: pycocoevalcap alone, as its ``COCOEvalCap`` runs it: ``PTBTokenizer`` → ``Bleu(4)``, ``Meteor()``,
  ``Rouge()``, ``Cider()`` on whole reports (NLG only: no CIs, no regions, no clinical metrics).

Both are timed in the same process, one after the other; each row carries the load average, and the CPU seconds
(this process + its Java children), which depend much less on the other processes of a shared machine than the wall
time does. Target: full suite <= 60 s wall on 2 cores.

    .venv/bin/python -m bench.bench_evaluation [--quick] [--json out.json]      (BENCH_EVAL_REPEAT=N to repeat)
"""

from __future__ import annotations

import csv
import os
import resource
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


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def ours(hyps: list[str], refs: list[str]):
    from chatapp.evaluation.evaluate import evaluate_reports

    return evaluate_reports(hyps, refs)


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
        out[name] = score  # (pycocoevalcap's Meteor stops its JVM in __del__, when this function returns)
    return out


def _timed(fn, *args) -> tuple[object, float, float, list[float]]:
    c0, t0 = _cpu(), time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0, _cpu() - c0, [round(x, 2) for x in os.getloadavg()]


def run(quick: bool) -> BenchResult:
    res = BenchResult("evaluation")
    if not CTRATE_REPORTS.exists():
        res.skipped = "no input: ../shared/data/ct-rate_ctclip-text-classifier is absent"
        return res
    n = 40 if quick else N_PAIRS
    rep = 1 if quick else int(os.environ.get("BENCH_EVAL_REPEAT", "1"))
    hyps, refs = load_pairs(n)
    a, b, ca, cb, la, lb = [], [], [], [], [], []
    full = base = None
    for _ in range(rep):  # interleaved: the machine is shared
        full, t, c, load = _timed(ours, hyps, refs)
        a.append(t), ca.append(c), la.append(load)
        base, t, c, load = _timed(baseline, hyps, refs)
        b.append(t), cb.append(c), lb.append(load)
    ma, mb = float(np.median(a)), float(np.median(b))
    res.rows.append(Row("evaluation suite (full)", f"{n:,} CT-RATE report pairs: evaluate_reports defaults (NLG + "
                        "CIs, per-region NLG incl. METEOR + CE, CE/CRG + CIs, templates)", "median s", ma, mb,
                        "pycocoevalcap alone (PTB, BLEU, METEOR, ROUGE-L, CIDEr; whole reports only)", "<= 60 s",
                        ma <= 60, rep, f"runs ours {[round(x, 1) for x in a]} (CPU s {[round(x, 1) for x in ca]}, "
                        f"load after {la}), base {[round(x, 1) for x in b]} (CPU s {[round(x, 1) for x in cb]}, "
                        f"load after {lb})"))
    res.details.append(f"full evaluate_reports stage seconds { {k: round(v, 1) for k, v in full.seconds.items()} }")
    diffs = {"BLEU-4": abs(full.nlg["BLEU-4"] - base["BLEU"][3]), "METEOR": abs(full.nlg["METEOR"] - base["METEOR"]),
             "ROUGE-L": abs(full.nlg["ROUGE-L"] - base["ROUGE-L"]), "CIDEr": abs(full.nlg["CIDEr"] - base["CIDEr"])}
    res.details.append("parity with pycocoevalcap (|ours - theirs|): " + ", ".join(f"{k} {v:.1e}"
                                                                                  for k, v in diffs.items())
                       + (" (all < 1e-4)" if max(diffs.values()) < 1e-4 else " (DIFFERENT)"))
    return res


if __name__ == "__main__":
    sys.exit(bench_main(run))
