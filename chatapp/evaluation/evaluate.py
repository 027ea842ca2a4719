"""``evaluate_reports``: every metric of generated vs. reference reports in one call (the API behind
``ctscribe evaluate``).

Layout of :meth:`EvalResult.to_dict` (= ``metrics.json``)::

    n_pairs, ids: {only_in_pred, only_in_ref}
    nlg: {BLEU-1..4, METEOR, ROUGE-L, CIDEr}     nlg_ci95: {same keys: [lo, hi]}     nlg_note
    ce:  {micro: {precision, recall, f1}, macro: {...}, per_label: {finding: {precision, recall, f1, support,
          prevalence_pred, prevalence_ref}}, crg, ci95: {micro_f1, macro_f1, crg}, reference_labels, labeler}
    regions: {region: {n_pairs, nlg: {...}, ce: {micro, macro, findings} | null}}
    regions_note  (set when per-region METEOR was turned off: the region ``nlg`` then has no METEOR key)
    templates: {overall: {pred: {...}, ref: {...}}, regions: {region: {pred, ref}}}
    lengths: {pred: {mean, median}, ref: {mean, median}}   (words per report)
    seconds: {labels, nlg, total}
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chatapp.evaluation.ce import ce_metrics
from chatapp.evaluation.labeler import label_reports
from chatapp.evaluation.router import split_regions
from chatapp.evaluation.templates import collapse_stats
from vision.errors import CTScribeError
from vision.registry import FINDING_NAMES, FINDINGS, REGION_KEYS

log = logging.getLogger(__name__)

LABELER_NAME = "ctscribe open rule labeler (chatapp.evaluation.labeler)"


@dataclass
class EvalResult:
    ids: list[str]
    nlg: dict[str, float] = field(default_factory=dict)
    nlg_ci95: dict[str, list[float]] = field(default_factory=dict)
    nlg_note: str = ""
    regions_note: str = ""
    ce: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)
    templates: dict = field(default_factory=dict)
    mismatch: dict[str, list[str]] = field(default_factory=dict)
    lengths_pred: list[int] = field(default_factory=list)
    lengths_ref: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    bertscore: dict | None = None

    def to_dict(self) -> dict:
        def summ(v: list[int]) -> dict:
            return {"mean": float(np.mean(v)) if v else 0.0, "median": float(np.median(v)) if v else 0.0}

        return _clean({
            "n_pairs": len(self.ids),
            "ids": self.mismatch,
            "nlg": self.nlg,
            "nlg_ci95": self.nlg_ci95,
            "nlg_note": self.nlg_note,
            "bertscore": self.bertscore,
            "ce": self.ce,
            "regions": self.regions,
            "regions_note": self.regions_note,
            "templates": self.templates,
            "lengths": {"pred": summ(self.lengths_pred), "ref": summ(self.lengths_ref)},
            "seconds": self.seconds,
        })


def _clean(o):
    """JSON-safe copy: NaN → None, tuples → lists, numpy scalars → Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if math.isnan(float(o)) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    return o


def _as_dict(x: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    return dict(x) if isinstance(x, Mapping) else {str(i): t for i, t in enumerate(x)}


def evaluate_reports(preds: Mapping[str, str] | Sequence[str], refs: Mapping[str, str] | Sequence[str], *,
                     pred_regions: Mapping[str, Mapping[str, str]] | None = None,
                     ref_regions: Mapping[str, Mapping[str, str]] | None = None,
                     ref_labels: Mapping[str, Mapping[str, int]] | None = None,
                     nlg: bool = True, meteor: bool = True, region_meteor: bool = True, n_boot: int = 1000,
                     seed: int = 0, bertscore_model: str | None = None) -> EvalResult:
    """Score generated reports against references.

    Args:
        preds / refs: id → report text (or aligned lists; ids are then positions). Ids are joined; ids in only one
            of them are listed in ``result.mismatch`` and left out.
        pred_regions / ref_regions: id → {region → text} when the tables came split by region; otherwise reports
            are split with :func:`chatapp.evaluation.router.split_regions`.
        ref_labels: id → {finding → 0/1} reference labels (e.g. radiologist labels); default: the labeler's.
        nlg: compute BLEU/METEOR/ROUGE-L/CIDEr (needs Java); ``meteor=False`` skips METEOR everywhere.
        region_meteor: METEOR per region too (default; each distinct region pair is aligned once by the jar and
            aggregated in Python). False leaves METEOR out of the region ``nlg`` (``regions_note`` says so).
        n_boot: bootstrap resamples for the 95% CIs of the headline metrics (whole-report NLG, CE micro/macro, CRG).
        bertscore_model: a local model folder for BERTScore (reported as ``bertscore``); None skips it.
    """
    t_start = time.perf_counter()
    jar = None
    if nlg and meteor:  # start the METEOR JVMs first: they load their tables while the labeler runs
        from chatapp.evaluation.meteor import JavaMissingError, MeteorJar
        from chatapp.evaluation.metrics import SMALL_CORPUS

        n = min(len(preds), len(refs))  # report pairs (region pairs are short: they add little alignment work)
        try:
            jar = MeteorJar(1 if n < SMALL_CORPUS else None)
        except JavaMissingError:
            jar = None  # reported below, where the tokenizer needs Java too
    try:
        return _evaluate(preds, refs, pred_regions, ref_regions, ref_labels, nlg, meteor, region_meteor, n_boot,
                         seed, bertscore_model, jar, t_start)
    finally:
        if jar is not None:
            jar.close()


def _evaluate(preds, refs, pred_regions, ref_regions, ref_labels, nlg, meteor, region_meteor, n_boot, seed,
              bertscore_model, jar, t_start) -> EvalResult:
    from chatapp.evaluation.io import join_ids

    P, R = _as_dict(preds), _as_dict(refs)
    ids, mismatch = join_ids(P, R)
    if mismatch["only_in_pred"] or mismatch["only_in_ref"]:
        log.warning("%d prediction ids and %d reference ids have no partner and are left out",
                    len(mismatch["only_in_pred"]), len(mismatch["only_in_ref"]))
    hyp = [P[i] for i in ids]
    ref = [R[i] for i in ids]
    res = EvalResult(ids=ids, mismatch=mismatch)
    res.lengths_pred = [len(t.split()) for t in hyp]
    res.lengths_ref = [len(t.split()) for t in ref]

    # ---- regions
    preg = [dict(pred_regions[i]) if pred_regions and i in pred_regions else _joined(split_regions(t))
            for i, t in zip(ids, hyp)]
    rreg = [dict(ref_regions[i]) if ref_regions and i in ref_regions else _joined(split_regions(t))
            for i, t in zip(ids, ref)]

    # ---- labels and CE
    t0 = time.perf_counter()
    yp = _matrix(label_reports(hyp))
    if ref_labels is not None:
        missing = [i for i in ids if i not in ref_labels]
        if missing:
            raise CTScribeError(f"reference labels are missing for {len(missing)} ids (e.g. {missing[:3]}): give "
                                "a label row for every reference report, or omit the label file.")
        yr = np.array([[int(ref_labels[i].get(n, 0)) for n in FINDING_NAMES] for i in ids], dtype=int)
        source = "label file"
    else:
        yr = _matrix(label_reports(ref))
        source = "labeler"
    res.ce = ce_metrics(yr, yp, FINDING_NAMES, n_boot=n_boot, seed=seed)
    res.ce["reference_labels"] = source
    res.ce["labeler"] = LABELER_NAME
    region_ce = {}
    for reg in REGION_KEYS:
        cols = [j for j, f in enumerate(FINDINGS) if f.region == reg]
        rows = [k for k in range(len(ids)) if rreg[k].get(reg)]
        if not cols or not rows:
            region_ce[reg] = None
            continue
        lp = _matrix(label_reports([preg[k].get(reg, "") for k in rows]))[:, cols]
        lr = _matrix(label_reports([rreg[k].get(reg, "") for k in rows]))[:, cols]
        c = ce_metrics(lr, lp, [FINDING_NAMES[j] for j in cols])
        region_ce[reg] = {"micro": c["micro"], "macro": c["macro"], "findings": [FINDING_NAMES[j] for j in cols]}
    res.seconds["labels"] = time.perf_counter() - t0

    # ---- NLG, whole reports and per region, one tokenizer call and one METEOR pass
    t0 = time.perf_counter()
    region_rows = {reg: [k for k in range(len(ids)) if rreg[k].get(reg)] for reg in REGION_KEYS}
    nlg_out = {}
    if nlg:
        from chatapp.evaluation.metrics import JavaMissingError, nlg_grouped

        all_h, all_r = list(hyp), list(ref)
        groups: dict[str, list[int]] = {"__all__": list(range(len(ids)))}
        for reg, rows in region_rows.items():
            groups[reg] = list(range(len(all_h), len(all_h) + len(rows)))
            all_h += [preg[k].get(reg, "") for k in rows]
            all_r += [rreg[k][reg] for k in rows]
        try:
            nlg_out = nlg_grouped(all_h, all_r, groups, n_boot=n_boot, seed=seed, meteor=meteor,
                                  meteor_groups=None if region_meteor else ["__all__"], boot_groups=["__all__"],
                                  jar=jar)
        except JavaMissingError as e:
            res.nlg_note = str(e)
            log.warning("%s", e)
        if "__all__" in nlg_out:
            res.nlg = nlg_out["__all__"].scores
            res.nlg_ci95 = {k: list(v) for k, v in nlg_out["__all__"].ci95.items()}
        if nlg_out and not meteor:
            res.nlg_note = "METEOR skipped (--no-meteor)."
        if nlg_out and meteor and not region_meteor:
            res.regions_note = ("per-region METEOR not computed (turned off: `ctscribe evaluate "
                                "--no-region-meteor`, evaluation.region_meteor: false, or region_meteor=False); "
                                "BLEU, ROUGE-L and CIDEr are computed per region.")
    else:
        res.nlg_note = "NLG metrics skipped (--no-nlg)."
    if bertscore_model:
        from chatapp.evaluation.metrics import bertscore

        res.bertscore = bertscore(hyp, ref, bertscore_model)
    res.seconds["nlg"] = time.perf_counter() - t0
    res.regions = {reg: {"n_pairs": len(region_rows[reg]),
                         "nlg": nlg_out[reg].scores if reg in nlg_out else {},
                         "ce": region_ce[reg]} for reg in REGION_KEYS}

    # ---- template collapse
    res.templates = {
        "overall": {"pred": collapse_stats(hyp), "ref": collapse_stats(ref)},
        "regions": {reg: {"pred": collapse_stats(p.get(reg, "") for p in preg),
                          "ref": collapse_stats(r.get(reg, "") for r in rreg)} for reg in REGION_KEYS},
    }
    res.seconds["total"] = time.perf_counter() - t_start
    return res


def _joined(regions: Mapping[str, list[str]]) -> dict[str, str]:
    return {k: " ".join(v) for k, v in regions.items() if v}


def _matrix(labels: list[dict[str, int]]) -> np.ndarray:
    return np.array([[d[n] for n in FINDING_NAMES] for d in labels], dtype=int).reshape(len(labels), len(FINDING_NAMES))


def write_outputs(result: EvalResult, out_dir: str | Path, *, title: str = "ctscribe evaluation") -> dict[str, Path]:
    """Write ``metrics.json`` and the self-contained ``report.html`` into ``out_dir`` (created if needed)."""
    from chatapp.evaluation.html import render_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mj = out / "metrics.json"
    mj.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    hp = out / "report.html"
    hp.write_text(render_html(result, title=title), encoding="utf-8")
    return {"metrics": mj, "html": hp}
