"""Evaluate a checkpoint on unseen phantoms: prototype-memory AUROC per finding (macro over findings present) and the
two ablations (cues only / visual tokens only) as teacher-forced report NLL against the full model.

    python bench/bench_model.py [--checkpoint chatapp/weights/demo] [--n 200] [--seed 100000] [--nll-n 20]

Prints one JSON object. Encoder features are cached by content hash under $CTSCRIBE_HOME, so reruns are cheap.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=100_000, help="phantom seeds [seed, seed+n): unseen by training")
    ap.add_argument("--nll-n", type=int, default=20, help="phantoms used for the ablation NLL")
    args = ap.parse_args()

    from chatapp.cli import set_offline_env

    set_offline_env()
    from chatapp.config import load_config
    from chatapp.datasets import PhantomSource
    from chatapp.model import CTScribeModel
    from chatapp.train import evaluate_findings, featurize

    cfg = load_config(None, [f"model.checkpoint={args.checkpoint}", "model.llm.quantization=none"])
    model = CTScribeModel.from_config(cfg)
    t0 = time.time()
    shape = tuple(model.preset_params["spatial_size"])
    src = PhantomSource(args.n, seed=args.seed, shape=shape, spacing=(3.6, 3.6, 5.0))
    items = featurize(model, src)
    t_feat = time.time() - t0
    res = evaluate_findings(model, items)
    ablations = {}
    sub = items[: args.nll_n]
    for name, (vis, cues) in {"full": (True, True), "cues_only": (False, True), "visual_only": (True, False),
                              "neither": (False, False)}.items():
        model.use_visual_tokens, model.use_cues = vis, cues
        with torch.no_grad():
            nll = [float(model.lm_loss(it["x"][None], [[{"role": "user", "content": it["pairs"][0][0]}]],
                                       [it["pairs"][0][1]], max_target_tokens=96)) for it in sub]
        ablations[name] = sum(nll) / len(nll)
    print(json.dumps({"weights": model.weights_label, "n": res["n"], "macro_auroc": res["macro_auroc"],
                      "per_finding_auroc": res["per_finding"], "report_nll": ablations,
                      "featurize_s": round(t_feat, 1)}, indent=2))


if __name__ == "__main__":
    main()
