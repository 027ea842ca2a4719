"""Evaluate generated reports and template VQA on unseen synthetic phantoms with known findings.

Prints: CE micro-F1 of the reports against the phantom truth (through the project's labeler), per-finding F1,
unsupported findings left after the guard, nodule-size agreement (text within 1 mm of truth), template-question
accuracy by type (presence / location / size), distinct-output ratio and top-template share.

    python tools/eval_phantom_reports.py --n 200 --set report.use_store=false   # the acceptance run
    python tools/eval_phantom_reports.py --n 4 --seed0 200000                    # CI-sized (tests/test_pipeline.py)

Seeds start at ``--seed0`` (default 100000) so they are not the seeds phantom training sets use; thresholds are
tuned on 200000+ (``--dump`` writes per-phantom truth/probabilities/calls), never on the reported seeds.

Default geometry: 128x128x96 voxels at 2.7x2.7x3.33 mm, the same 346x346x320 mm field of view as the demo geometry
(96x96x64 at 3.6x3.6x5 mm, chosen only because the encoder preset is 96x96x64) with finer voxels, closer to a clinical
chest CT (0.7-1.5 mm in-plane, 1-3 mm slices): the pipeline resamples to the encoder preset anyway, and the
measurements (nodule diameter, ground glass, fluid volumes, calcium) see smaller structures. 192x192x128 at
1.8x1.8x2.5 mm works too but costs ~25 s per phantom on 2 loaded cores (phantom 5 s, regions 13 s, measurements
6 s), against 5-8 s here (n=200 took 28 min on today's shared box). The demo weights were trained at
the demo geometry (their per-finding thresholds in configs/default.yaml are set so both geometries work);
``--shape 96,96,64 --spacing 3.6,3.6,5`` evaluates there.

Measured 2026-11-30, demo weights before aac72f8 unless stated, seeds 100000-100199, ``report.use_store=false``, 2 shared cores:

    geometry              CE micro-F1 (TP/FP/FN)   nodule size <=1 mm   templates (presence, location, size)   time
    2.7x2.7x3.33 (dflt)   0.696 (608/47/484)       44/75                0.834 (1030/1200, 27/51, 29/51)        28 min
    2.7x2.7x3.33, before  0.528 (148/83/182), first 60 seeds (same 60 after: 0.684, 180/16/150)
    2.7x2.7x3.33, layer4+layer3 demo weights (aac72f8, thresholds retuned), first 60 seeds: 0.723 (193/11/137),
                          nodule 13/19, templates 0.863 (317/360, 8/13, 8/13), 4 min
    3.6x3.6x5             0.716 (629/35/463)       34/75                0.831 (1038/1200, 22/51, 22/51)        9 min
    3.6x3.6x5, before     0.625 (564/149/528)      37/75                0.793 (986/1200, 21/51, 25/51)

    session 3 (same weights, 2.7x2.7x3.33, first 60 seeds): 0.723 (193/11/137), nodule 13/19, templates 0.863
                          (317/360, 8/13, 8/13), 2 min; identical before and after the free-answer composer. On 30
                          tuning phantoms every presence answer agrees with its report (0 of 3,780 differ): the
                          template misses are detection misses, not answer bugs.
    session 3, all 200 seeds, same weights: 0.731 (651/38/441), nodule 44/75, templates 0.844 (1043/1200, 27/51,
                          29/51), 0 unsupported, distinct 1.0, top share 0.005, 8.1 min on a quiet box
    session 3, all 200 seeds, region-token demo weights (13435c2, macro AUROC 0.816) with report.thresholds
                          retuned on seeds 200000-200199: 0.804 (762/42/330), nodule 44/75, templates 0.870
                          (1077/1200, 27/51, 29/51), 0 unsupported, distinct 1.0, top share 0.005, 4.3 min; per
                          finding: hiatal hernia 0.97, peribronchial 0.96, consolidation 0.75 (were 0.72, 0, 0.24);
                          still 0: lymphadenopathy, atelectasis, fibrotic sequela, bronchiectasis (no threshold on
                          the tuning seeds makes their model-only calls right >= 60% of the time). Same weights with
                          the old thresholds: 0.707; thresholds tuned on 200000-200059 only: 0.801 (777/70/315).
    session 4, all 200 seeds, ground-glass growth (e59c339) + regions_hu demo weights (macro AUROC 0.885) with
                          thresholds retuned on seeds 200000-200199: 0.837 (827/58/265), nodule 44/75, templates
                          0.883 (1094/1200, 27/51, 29/51), 0 unsupported, distinct 1.0, top share 0.005, 10 min
                          with another job running; per finding: lung opacity 0.97 (was 0.61), atelectasis 0.57
                          (was 0), consolidation 0.78; still 0: lymphadenopathy, fibrotic sequela, bronchiectasis.
                          Same code on the tuning seeds: 0.824 before the thresholds were retuned.
    session 5, all 200 seeds: measured lymphadenopathy and bronchiectasis (vision.measure), region head refitted on
                          1,803 phantoms (macro AUROC 0.925 / 0.875 here), thresholds and measured minima retuned on
                          seeds 200000-200199, metal rim / pericardial-recess fixes: 0.907 (940/40/152), nodule
                          44/75, templates 0.918 (1139/1200, 27/51, 29/51), 0 unsupported, distinct 1.0, top share
                          0.005, 12.8 min with two other jobs running; per finding: lymphadenopathy 0.77 (was 0),
                          bronchiectasis 0.91 (was 0), atelectasis 0.76, consolidation 0.83, lung opacity 1.00;
                          still 0: fibrotic sequela. + nodules against the mediastinal pleura (1c4b60e): 0.910
                          (945/41/147), nodule 53/75, templates 0.928 (1142/1200, 32/51, 34/51), 0 unsupported,
                          distinct 1.0, top share 0.005, 5 min.
    session 6, all 200 seeds: isolated 2-slice nodules (434a5d4, chosen on the tuning seeds, where templates went
                          0.923 -> 0.932 and nodule size 53 -> 61/75): 0.910 (946/42/146), nodule 54/75, templates
                          0.931 (1142/1200, 35/51, 35/51), 0 unsupported, distinct 1.0, top share 0.005, 4.9 min.
                          + lymph nodes abutting organs (80899e7; tuning: aortopulmonary nodes 1/26 -> 6/26, CE
                          0.907 -> 0.908): 0.911 (949/42/143), lymphadenopathy F1 0.80 (was 0.77), nodule 54/75,
                          templates 0.932 (1143/1200, 35/51, 35/51), 0 unsupported, distinct 1.0, top share 0.005.
                          Where the template misses are (tuning seeds, ``--dump`` lists every question): presence
                          answers about fibrotic sequela (28 of 63 misses; the bands are 9-37 scattered voxels at
                          this grid), lymphadenopathy (11: hilar 0/39, subcarinal 0/15 and aortopulmonary 6/26
                          nodes are found, paratracheal 22/27, prevascular 13/20: the classical heart mask absorbs
                          subcarinal nodes, hilar and AP nodes merge with unsegmented vessels), nodules missed
                          (sub-voxel < 6 mm, or joined to vessels as thick as themselves) and 3 wrong lobes from the
                          approximate geometric lobes.
    session 7, all 200 seeds (rules chosen on the tuning seeds; the unseen seeds were run three times, see the
                          session-7 closing note): juxtapleural nodules + thin-core isolated nodules + great-vessel
                          tubes / hilar nodes: 0.911 (953/47/139), lymphadenopathy 0.83, nodule 0.76 (juxtapleural
                          path: 3 true / 5 false here, 5 / 1 on the tuning seeds), templates 0.935 (1146/1200, 36/51,
                          35/51). Juxtapleural candidates demoted to "low" (not reported) and low candidates made to
                          give way to juxta-mediastinal nodules instead of suppressing them (a bug the second run
                          exposed: nodule size 54 -> 48/75): final (3f7232d) 0.912 (954/46/138), lymphadenopathy 0.83
                          (was 0.80), nodule 0.78, nodule size 54/75, templates 0.934 (1145/1200, 36/51, 35/51),
                          0 unsupported, distinct 1.0, top share 0.005, 7.7 min. Fibrotic sequela still 0: a
                          partial-volume band detector that worked on phantoms called 7 small vessels "bands" on the
                          real TCIA CT, so it was not kept (the phantom lungs have no sub-resolution vessels).
    The template figures need ../shared/data (RadGenome templates); without it the result says
    ``"templates": "fallback ..."`` (2 presence wordings: 320/360 on the same 60 seeds, not comparable).

0 unsupported findings after the guard and distinct-output ratio 1.0 (top-template share <= 0.02) in every run.
Measured today (12 of 18): nodule, emphysema, pleural/pericardial effusion, cardiomegaly, 2 calcium scores, medical
material, lung opacity (ground-glass volume), mosaic attenuation (attenuation heterogeneity), lymphadenopathy (node
short axis), bronchiectasis (dilated-bronchus lumen). The other 6 rely on the
demo prototypes; most remaining misses are those (hiatal hernia, atelectasis, fibrotic sequela, bronchiectasis,
consolidation, lymphadenopathy, and peribronchial thickening at the default geometry).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT.parent / "shared" / "data" / "radgenome-chestct_vqa-subset2000"
FALLBACK_TEMPLATES = {  # used when ../shared/data is absent
    "presence": ["Can {abnormality} be identified in the {region}?", "Is there any sign of {abnormality} in the {region}?"],
    "location": ["Where is the {abnormality} located in the image?"],
    "size": ["What is the size of the {abnormality} in the {region}?"],
}
_NUM = re.compile(r"\d+(?:\.\d+)?")


def load_templates() -> dict[str, list[str]]:
    out = {}
    for kind in ("presence", "location", "size"):
        p = TEMPLATES / f"qa_template_{kind}_template.json"
        out[kind] = sorted(set(json.loads(p.read_text())[kind])) if p.exists() else FALLBACK_TEMPLATES[kind]
    return out


def report_body(rep: Any) -> str:
    """The report's sentences only (no notices/references), as the labeler should read them."""
    return " ".join(s.text for sec in rep.sections if sec.region != "recommendations" for s in sec.sentences
                    if s.status != "removed")


def truth_nodules(ph: Any) -> list[dict[str, Any]]:
    n = ph.measurements.get("nodules") or []
    return [x for x in n if isinstance(x, dict) and x.get("diameter_mm")]


DEFAULT_SHAPE = (128, 128, 96)
DEFAULT_SPACING = (2.7, 2.7, 3.33)


def evaluate(n: int = 200, seed0: int = 100000, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING, pipe: Any = None,
             questions: int = 6, log=print, records: list | None = None) -> dict[str, Any]:
    """Run the evaluation; ``records`` (when a list) receives per-phantom truth, probabilities and calls, so
    thresholds can be tuned offline on a separate seed range (``tools/eval_phantom_reports.py --dump``)."""
    import numpy as np

    from chatapp.evaluation.labeler import label_report
    from chatapp.pipeline import Pipeline
    from vision.phantom import make_phantom, random_findings
    from vision.registry import FINDING_NAMES, REGIONS, finding

    pipe = pipe or Pipeline.from_config()
    tpl = load_templates()
    rng = np.random.default_rng(seed0)
    tp = Counter(); fp = Counter(); fn = Counter()
    unsupported = 0
    size_ok = size_n = 0
    qa: dict[str, list[bool]] = {"presence": [], "location": [], "size": []}
    texts: list[str] = []
    t0 = time.perf_counter()
    for i in range(n):
        seed = seed0 + i
        ph = make_phantom(seed, shape=shape, spacing=spacing, findings=random_findings(seed))
        study = pipe.analyze(ph.volume)
        rep = pipe.report(study)
        body = report_body(rep)
        texts.append(body)
        pred = label_report(body)
        for name in FINDING_NAMES:
            t, p = int(ph.labels.get(name, 0)), int(pred.get(name, 0))
            tp[name] += t and p; fp[name] += (not t) and p; fn[name] += t and (not p)
        unsupported += int(rep.guard.get("unsupported_after_guard", 0))
        if records is not None:
            records.append({"seed": seed, "truth": {k: int(ph.labels.get(k, 0)) for k in FINDING_NAMES},
                            "pred": {k: int(pred.get(k, 0)) for k in FINDING_NAMES},
                            "probabilities": dict(study.probabilities),
                            "calls": {k: v["source"] for k, v in rep.guard.get("calls", {}).items()}})
        nods = truth_nodules(ph)
        nod_nums = [float(x) for s in rep.sentences() if "nodule" in s.text and s.region == "lung"
                    for x in _NUM.findall(s.text)]
        for nd in nods:
            size_n += 1
            size_ok += any(abs(x - float(nd["diameter_mm"])) <= 1.0 for x in nod_nums)
        # template questions about this phantom's truth
        asked: list[dict[str, Any]] = []
        region_of = {r.key: r.radgenome_name for r in REGIONS}
        names = list(FINDING_NAMES)
        for _ in range(questions):
            name = names[int(rng.integers(len(names)))]
            q = str(rng.choice(tpl["presence"])).format(abnormality=name.lower(),
                                                        region=region_of[finding(name).region])
            a = pipe.ask(study, q)
            qa["presence"].append(a.text.startswith("Yes" if ph.labels.get(name) else "No"))
            asked.append({"type": "presence", "finding": name, "truth": int(ph.labels.get(name, 0)),
                          "answer": a.text, "ok": qa["presence"][-1]})
        for nd in nods[:1]:
            a = pipe.ask(study, str(rng.choice(tpl["location"])).format(abnormality="lung nodule"))
            qa["location"].append(nd["side"] in a.text and (not nd.get("lobe") or nd["lobe"] in a.text))
            asked.append({"type": "location", "truth": f"{nd['side']} {nd.get('lobe', '')}", "answer": a.text,
                          "ok": qa["location"][-1]})
            a = pipe.ask(study, str(rng.choice(tpl["size"])).format(abnormality="lung nodule", region="lung"))
            qa["size"].append(any(abs(float(x) - float(nd["diameter_mm"])) <= 1.0 for x in _NUM.findall(a.text)))
            asked.append({"type": "size", "truth": float(nd["diameter_mm"]), "answer": a.text, "ok": qa["size"][-1]})
        if records is not None:
            records[-1]["questions"] = asked
            records[-1]["nodules"] = [{k: nd.get(k) for k in ("side", "lobe", "diameter_mm")} for nd in nods]
        if log and (i + 1) % max(1, n // 10) == 0:
            log(f"  {i + 1}/{n} phantoms, {time.perf_counter() - t0:.0f} s")
    TP, FP, FN = sum(tp.values()), sum(fp.values()), sum(fn.values())
    micro = 2 * TP / max(1, 2 * TP + FP + FN)
    per = {k: round(2 * tp[k] / max(1, 2 * tp[k] + fp[k] + fn[k]), 3) for k in FINDING_NAMES
           if tp[k] + fp[k] + fn[k]}
    masked = Counter(_NUM.sub("#", t) for t in texts)
    all_q = [x for v in qa.values() for x in v]
    return {
        "phantoms": n, "shape": list(shape), "spacing": list(spacing), "weights": pipe.weights_label or "none",
        "ce_micro_f1": round(micro, 4), "tp": TP, "fp": FP, "fn": FN, "per_finding_f1": per,
        "unsupported_after_guard": unsupported,
        "nodule_size_within_1mm": f"{size_ok}/{size_n}",
        "template_accuracy": round(sum(all_q) / max(1, len(all_q)), 4),
        "template_accuracy_by_type": {k: f"{sum(v)}/{len(v)}" for k, v in qa.items()},
        "distinct_output_ratio": round(len(set(texts)) / max(1, n), 4),
        "top_template_share": round(masked.most_common(1)[0][1] / max(1, n), 4) if texts else 0.0,
        "templates": "radgenome" if (TEMPLATES / "qa_template_presence_template.json").exists() else
                     "fallback (../shared/data absent: not comparable with radgenome runs)",
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed0", type=int, default=100000)
    ap.add_argument("--shape", default=",".join(map(str, DEFAULT_SHAPE)))
    ap.add_argument("--spacing", default=",".join(map(str, DEFAULT_SPACING)))
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--dump", default=None, help="write per-phantom truth/probabilities/calls (JSON) for tuning")
    a = ap.parse_args(argv)
    from chatapp.cli import set_offline_env
    from chatapp.config import load_config
    from chatapp.pipeline import Pipeline

    set_offline_env()
    pipe = Pipeline.from_config(load_config(a.config, a.overrides))
    recs: list | None = [] if a.dump else None
    res = evaluate(a.n, a.seed0, tuple(int(x) for x in a.shape.split(",")),
                   tuple(float(x) for x in a.spacing.split(",")), pipe, log=lambda m: print(m, file=sys.stderr),
                   records=recs)
    if a.dump:
        Path(a.dump).write_text(json.dumps(recs) + "\n")
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
