"""CE metrics (P/R/F1 micro/macro), the CRG score on a hand-computed example, and template-collapse statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chatapp.evaluation.ce import ce_metrics, crg_score, prf
from chatapp.evaluation.templates import collapse_stats


def test_crg_hand_computed_example():
    # N=2 reports, L=3 labels: T=6 slots, A=3 positives → w_TP = w_FN = (6-3)/(2*3) = 0.5, w_FP = 1
    ref = np.array([[1, 0, 0], [1, 1, 0]])
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    # TP=2, FN=1, FP=1 → s = 2*0.5 - 1*0.5 - 1*1 = -0.5; S_max = 3*0.5 = 1.5; CRG = 1.5 / (3 - (-0.5)) = 3/7
    assert crg_score(ref, pred) == pytest.approx(3 / 7, abs=1e-12)


def test_crg_bounds():
    ref = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert crg_score(ref, ref) == pytest.approx(1.0)
    assert crg_score(ref, np.zeros_like(ref)) == pytest.approx(1 / 3)  # "all normal" gets 1/3, not a high score
    # flagging everything is as trivial as flagging nothing: s = -(T-A)/2 = -S_max in both cases
    assert crg_score(ref, np.ones_like(ref)) == pytest.approx(1 / 3)
    one_fp = ref.copy()
    one_fp[2, 0] = 1
    assert 1 / 3 < crg_score(ref, one_fp) < 1.0
    assert math.isnan(crg_score(np.zeros((2, 3), int), np.zeros((2, 3), int)))


def test_prf_micro_macro():
    y = np.array([[1, 0], [1, 1], [0, 0]])
    p = np.array([[1, 1], [0, 1], [0, 0]])
    r = prf(y, p)
    # label 0: TP1 FN1 → P1 R.5 F .667; label 1: TP1 FP1 → P.5 R1 F .667; micro: TP2 FP1 FN1 → .667
    assert r["per_label"]["f1"] == pytest.approx([2 / 3, 2 / 3])
    assert r["micro"]["f1"] == pytest.approx(2 / 3)
    assert r["macro"]["precision"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        prf(y, p[:, :1])


def test_ce_metrics_by_name_with_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 3))
    out = ce_metrics(y, y, ["a", "b", "c"], n_boot=50)
    assert out["micro"]["f1"] == 1.0 and out["crg"] == pytest.approx(1.0)
    assert set(out["per_label"]) == {"a", "b", "c"}
    assert out["per_label"]["a"]["prevalence_pred"] == out["per_label"]["a"]["prevalence_ref"]
    assert out["ci95"]["macro_f1"] == [1.0, 1.0]


def test_template_collapse():
    s = collapse_stats(["No effusion.", "no  effusion.", "Nodule.", "", "Atelectasis."])
    assert s["n"] == 4 and s["distinct"] == 3
    assert s["distinct_ratio"] == pytest.approx(0.75) and s["top_share"] == pytest.approx(0.5)
    assert s["top_text"] == "no effusion."
    assert collapse_stats([])["distinct_ratio"] == 0.0
