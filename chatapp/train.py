"""Training on accelerate: stage 1 aligns the bridge (resampler + prototypes) with the LLM frozen, stage 2 also tunes
LoRA. Same code on CPU, one GPU, or many (``accelerate launch``, DeepSpeed ZeRO-2 via configs/deepspeed_zero2.json).

The ``train`` config section::

    train:
      seed: 0
      data: {kind: ctrate|radgenome|phantom, ...}      # chatapp.datasets.build_source
      batch_size: 4
      stages:                                          # run in order; --max-steps caps the total
        - {name: align, steps: 300, lr: 1.0e-3, lm_weight: 1.0, proto_weight: 1.0, lora: false}
        - {name: tune,  steps: 100, lr: 2.0e-4, lm_weight: 1.0, proto_weight: 0.5, lora: true}
      save_every: 100
      max_target_tokens: null                          # truncate answers (cheap CPU runs)
      save_dtype: float32                              # float16 for small shipped artefacts
      weights_label: null                              # default: "<output dir name>"
      mixed_precision: "no"                            # no | bf16 | fp16 (GPU)

Encoder features are computed once per volume and cached on disk (frozen encoders), so epochs cost only the bridge
and the LLM. Writes ``output_dir/metrics.jsonl`` (one JSON object per step) and a checkpoint (``chatapp.checkpoint``)
every ``save_every`` steps and at the end; ``trainer_state.json`` lets a rerun resume from the last saved step
(weights restored exactly; the AdamW moments restart).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from chatapp.config import Config
from vision.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_STAGES = [{"name": "align", "steps": 100, "lr": 1e-3, "lm_weight": 1.0, "proto_weight": 1.0, "lora": False}]


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def featurize(model, source, *, progress: bool = True) -> list[dict[str, Any]]:
    """Encode every example once (disk-cached for frozen encoders). Returns dicts with tokens, labels, pairs."""
    from tqdm.auto import tqdm

    from chatapp.model import preprocess_volume

    items = []
    for ex in tqdm(source, total=len(source) if hasattr(source, "__len__") else None, desc="encoding",
                   disable=not progress):
        vol = ex.load()
        if model.encoder.frozen:
            x = model.encode(vol)
        else:  # trainable encoder: keep the preprocessed volume, encode inside the step
            x = preprocess_volume(vol, model.preset, model.preset_params)
        items.append({"key": ex.key, "x": x, "labels": torch.tensor(ex.labels, dtype=torch.float32),
                      "pairs": ex.pairs})
    return items


def _trainable(model, stage: dict) -> list[torch.nn.Parameter]:
    params = list(model.bridge.parameters())
    if not model.encoder.frozen:
        params += list(model.encoder.parameters())
    for p in model.llm.lora_params:
        p.requires_grad_(bool(stage.get("lora")))
    if stage.get("lora"):
        params += list(model.llm.lora_params)
    for p in params:
        p.requires_grad_(True)
    return params


def train(config: Config, *, max_steps: int | None = None, output_dir: Path | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train per the ``train`` section; returns a summary (steps, final losses, checkpoint path)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from chatapp.checkpoint import load_checkpoint, save_checkpoint
    from chatapp.datasets import build_source
    from chatapp.model import CTScribeModel

    sec = config.section("train")
    out = Path(output_dir or sec.get("output_dir") or (config.data_dir / "runs" / "default"))
    out.mkdir(parents=True, exist_ok=True)
    seed = int(sec.get("seed", 0))
    seed_everything(seed)
    stages = sec.get("stages") or DEFAULT_STAGES
    if any(s.get("lora") for s in stages) and not config.get("model.llm.lora"):
        raise ConfigError("a training stage has lora: true but model.llm.lora is not set; add "
                          "model.llm.lora: {r: 8, alpha: 16, target_modules: [q_proj, v_proj]}")
    accel = Accelerator(mixed_precision=str(sec.get("mixed_precision", "no")), cpu=not torch.cuda.is_available())
    model = CTScribeModel.from_config(config)
    state_file = out / "trainer_state.json"
    start = 0
    if state_file.exists() and (out / "config.json").exists():
        load_checkpoint(out).apply(model)
        start = int(json.loads(state_file.read_text())["step"])
        log.info("resuming from %s at step %d", out, start)
    data_spec = sec.get("data")
    if not data_spec:
        raise ConfigError("train.data is missing; see configs/train-phantom.yaml or configs/train-ctrate.yaml")
    base = Path(config.path).resolve().parent if config.path else None  # relative data paths: from the config file
    items = featurize(model, build_source(data_spec, base), progress=progress and accel.is_main_process)
    if not items:
        raise ConfigError("the training data source is empty")
    total = sum(int(s.get("steps", 0)) for s in stages)
    if max_steps is not None:
        total = min(total, int(max_steps))
    bs = int(sec.get("batch_size", 4))
    rng = random.Random(seed + start)
    label = sec.get("weights_label") or out.name
    save_every = int(sec.get("save_every", 100))
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(str(sec.get("save_dtype")), None)
    metrics = open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in the finally below)
    step, last = 0, {}
    bar = tqdm(total=total, initial=min(start, total), desc="training", disable=not (progress and accel.is_main_process))
    model.train()
    try:
        for stage in stages:
            n = int(stage.get("steps", 0))
            if step + n <= start:  # stage already done before the resume point
                step += n
                continue
            params = _trainable(model, stage)
            opt = torch.optim.AdamW(params, lr=float(stage.get("lr", 1e-3)), weight_decay=float(stage.get("wd", 0.0)))
            wrapped, opt = accel.prepare(model, opt)
            for _ in range(n):
                if step >= total:
                    break
                if step < start:
                    step += 1
                    continue
                t0 = time.time()
                batch = [rng.choice(items) for _ in range(bs)]
                pairs = [rng.choice(b["pairs"]) if rng.random() < float(stage.get("vqa_fraction", 0.5))
                         else b["pairs"][0] for b in batch]
                x = torch.stack([b["x"] for b in batch]).to(accel.device)
                if x.dim() == 4:
                    x = x.unsqueeze(1)  # (B, 1, X, Y, Z) for a trainable encoder
                labels = torch.stack([b["labels"] for b in batch]).to(accel.device)
                res = wrapped(x, labels, [[{"role": "user", "content": q}] for q, _ in pairs], [a for _, a in pairs],
                              lm_weight=float(stage.get("lm_weight", 1.0)),
                              proto_weight=float(stage.get("proto_weight", 1.0)),
                              max_target_tokens=sec.get("max_target_tokens"))
                accel.backward(res["loss"])
                accel.clip_grad_norm_(params, float(stage.get("clip", 1.0)))
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                last = {k: float(v.detach()) for k, v in res.items()}
                if accel.is_main_process:
                    metrics.write(json.dumps({"step": step, "stage": stage.get("name", ""), **last,
                                              "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 3)})
                                  + "\n")
                    metrics.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.3f}")
                    if save_every and step % save_every == 0 and step < total:
                        _save(accel.unwrap_model(wrapped), out, label, dtype, step, data_spec, seed, save_checkpoint)
            if step >= total:
                break
    finally:  # the metrics log is closed even when a step fails
        bar.close()
        metrics.close()
    model.eval()
    if accel.is_main_process:
        _save(accel.unwrap_model(model), out, label, dtype, step, data_spec, seed, save_checkpoint)
    return {"steps": step, "output_dir": str(out), "last": last, "examples": len(items)}


def _save(model, out: Path, label: str, dtype, step: int, data_spec: dict, seed: int, save_checkpoint) -> None:
    save_checkpoint(model, out, weights_label=label, dtype=dtype,
                    extra={"step": step, "data": data_spec, "seed": seed})
    (out / "trainer_state.json").write_text(json.dumps({"step": step, "seed": seed}), encoding="utf-8")


@torch.no_grad()
def evaluate_findings(model, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-finding AUROC of the prototype memory over ``items`` (featurized), and the macro mean over findings
    that have both positives and negatives."""
    from sklearn.metrics import roc_auc_score

    from vision.registry import FINDING_NAMES

    probs = torch.stack([torch.sigmoid(model.bridge.prototypes(model._batch(it["x"])))[0].cpu() for it in items])
    labels = torch.stack([it["labels"] for it in items])
    per = {}
    for k, name in enumerate(FINDING_NAMES):
        y, p = labels[:, k], probs[:, k]
        ok = ~torch.isnan(y)
        if ok.sum() and 0 < y[ok].sum() < ok.sum():
            per[name] = float(roc_auc_score(y[ok].numpy(), p[ok].numpy()))
    macro = sum(per.values()) / len(per) if per else math.nan
    return {"macro_auroc": macro, "per_finding": per, "n": len(items)}
