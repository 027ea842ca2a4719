"""Clinical-efficacy (CE) metrics: per-label, micro and macro P/R/F1 over the 18 findings, and the CRG score.

CRG (Hamamci et al., "CRG Score: A Distribution-Aware Clinical Metric for Radiology Report Generation", MIDL 2025),
implemented from its definition: over all N reports x L labels (T = N·L label slots, A = positive slots in the
references, TP/FN/FP pooled), true negatives are ignored and

    w_TP = w_FN = (T - A) / (2A),   w_FP = 1,   s = TP·w_TP - FN·w_FN - FP·w_FP,
    S_max = A·w_TP,                  CRG = S_max / (2·S_max - s)

so a perfect prediction scores 1, predicting "all normal" scores 1/3, and false positives cost more when findings
are rare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def prf(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Precision, recall and F1 per label, micro and macro.

    Args:
        y_true: (N, L) 0/1 reference labels.
        y_pred: (N, L) 0/1 predicted labels.

    Returns:
        ``{"per_label": {"precision": [L], "recall": [L], "f1": [L], "support": [L]}, "micro": {...},
        "macro": {...}}``. A label with no positives and no predictions has P = R = F1 = 1 (nothing missed,
        nothing invented); macro averages all labels.
    """
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"labels must be two (N, L) arrays of the same shape, got {y.shape} and {p.shape}")
    tp, fp, fn = (y & p).sum(0), ((1 - y) & p).sum(0), (y & (1 - p)).sum(0)
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    TP, FP, FN = int(tp.sum()), int(fp.sum()), int(fn.sum())
    mp = TP / (TP + FP) if TP + FP else 1.0
    mr = TP / (TP + FN) if TP + FN else 1.0
    mf = 2 * mp * mr / (mp + mr) if mp + mr else 0.0
    return {
        "per_label": {"precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist(),
                      "support": y.sum(0).astype(int).tolist()},
        "micro": {"precision": mp, "recall": mr, "f1": mf},
        "macro": {"precision": float(prec.mean()), "recall": float(rec.mean()), "f1": float(f1.mean())},
    }


def crg_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """CRG score of (N, L) 0/1 predictions against references (NaN when the references hold no positive)."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    T, A = y.size, int(y.sum())
    if A == 0:
        return math.nan
    tp, fn, fp = int((y & p).sum()), int((y & (1 - p)).sum()), int(((1 - y) & p).sum())
    w = (T - A) / (2 * A)
    s = tp * w - fn * w - fp * 1.0
    s_max = A * w
    denom = 2 * s_max - s
    return float(s_max / denom) if denom else math.nan


def ce_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], *, n_boot: int = 0,
               seed: int = 0) -> dict:
    """CE block of metrics.json: per-label (by name), micro, macro, CRG, prevalences and bootstrap CIs."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    r = prf(y, p)
    per = {n: {k: r["per_label"][k][j] for k in ("precision", "recall", "f1", "support")}
           for j, n in enumerate(names)}
    for j, n in enumerate(names):
        per[n]["prevalence_pred"] = float(p[:, j].mean()) if len(p) else 0.0
        per[n]["prevalence_ref"] = float(y[:, j].mean()) if len(y) else 0.0
    out = {"micro": r["micro"], "macro": r["macro"], "per_label": per, "crg": crg_score(y, p)}
    if n_boot and len(y):
        rng = np.random.default_rng(seed)
        mic, mac, crg = [], [], []
        for _ in range(n_boot):
            i = rng.integers(0, len(y), len(y))
            b = prf(y[i], p[i])
            mic.append(b["micro"]["f1"])
            mac.append(b["macro"]["f1"])
            crg.append(crg_score(y[i], p[i]))
        out["ci95"] = {"micro_f1": _pct(mic), "macro_f1": _pct(mac), "crg": _pct([c for c in crg if not math.isnan(c)])}
    return out


def _pct(values) -> list[float]:
    if not len(values):
        return [math.nan, math.nan]
    lo, hi = np.percentile(np.asarray(values, dtype=float), [2.5, 97.5])
    return [float(lo), float(hi)]
