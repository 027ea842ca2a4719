"""The 10 RadGenome-ChestCT report regions as masks at inference time, plus structures the measurements need.

``compute_regions(volume)`` runs TotalSegmentator when it is installed with its weights (``backend="auto"`` or
``"totalsegmentator"``) and the classical HU/morphology path otherwise (``vision.regions_classical``). The classical
path works on a block-averaged grid of ~1.6 mm (``WORK_SPACING_MM``) and masks are upsampled lazily, nearest
neighbour, to the volume grid. Regions that cannot be found are listed in ``absent`` and their masks are empty:
nothing is invented.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vision.errors import CTScribeError
from vision.registry import REGION_KEYS
from vision.volume import CTVolume

log = logging.getLogger(__name__)

WORK_SPACING_MM = 1.6  # target in-plane/through-plane spacing of the work grid (integer block factors)
MIN_REGION_ML = {"thyroid": 2.0, "esophagus": 1.0, "trachea_and_bronchi": 1.0}  # below this a region is "absent"
DEFAULT_MIN_ML = 5.0
BACKENDS = ("auto", "classical", "totalsegmentator")


@dataclass
class RegionResult:
    """Region masks of one CT volume.

    Args:
        masks: the 10 region keys (``vision.registry.REGION_KEYS``) → bool (X, Y, Z) in the volume grid.
        structures: finer structures → bool (X, Y, Z): ``lung_left``, ``lung_right``, approximate lobes
            (``lung_upper_lobe_left``...), ``trachea``, ``main_bronchi``, ``heart``, ``aorta``, ``body``, ``bone``,
            ``vertebrae``, ``metal``, ``thoracic_cavity``, ``esophagus``...
        absent: region keys not found (empty masks), e.g. ``thyroid`` above the field of view.
        method: region/structure key → how it was obtained, in words.
        timings: step → seconds.
        info: facts found on the way (``contrast``, ``carina_z``, ``backend``, work-grid ``factors``...).
        work: work-grid arrays used by ``vision.measure`` (``hu``, ``spacing``, ``masks``, ``structures``).
    """

    masks: Mapping[str, np.ndarray]
    structures: Mapping[str, np.ndarray]
    absent: list[str]
    method: dict[str, str]
    timings: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    work: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary: per region present/absent and volume (mL)."""
        vml = float(np.prod(self.work.get("spacing", (1, 1, 1)))) / 1000.0
        wm = self.work.get("masks", {})
        out = {}
        for k in REGION_KEYS:
            vol = float(wm[k].sum()) * vml if k in wm else None
            out[k] = {"present": k not in self.absent, "volume_ml": None if vol is None else round(vol, 1),
                      "method": self.method.get(k, "")}
        return out


def work_factors(spacing: tuple[float, float, float], target: float = WORK_SPACING_MM) -> tuple[int, int, int]:
    """Integer block factors that bring each axis close to ``target`` mm (never finer than the input)."""
    return tuple(max(1, round(target / float(s))) for s in spacing)  # type: ignore[return-value]


def _right_is_plus_x(volume: CTVolume) -> bool:
    return bool(volume.affine[0, 0] >= 0) if abs(volume.affine[0, 0]) > 1e-6 else True


def _check(volume: CTVolume) -> None:
    a = volume.array
    if a.ndim != 3 or min(a.shape) < 8:
        from vision.errors import GeometryError

        raise GeometryError(f"region masks need a 3D volume of at least 8 voxels per axis, got shape {a.shape}; "
                            "load a full CT series, not a single slice")


def _absent(masks: Mapping[str, np.ndarray], spacing) -> list[str]:
    vml = float(np.prod(spacing)) / 1000.0
    return [k for k in REGION_KEYS if k not in masks or masks[k].sum() * vml < MIN_REGION_ML.get(k, DEFAULT_MIN_ML)]


CLASSICAL_METHODS = {
    "lung": "air components (HU < -400) inside the body minus the airway, split left/right, holes filled per slice",
    "trachea_and_bronchi": "midline air tube (HU < -600) tracked slice by slice from the top to 5 cm below the carina",
    "mediastinum": "space between the lungs (per-slice convex hull) anterior to the spinal canal, minus heart/bone",
    "heart": "largest soft-tissue blob (HU -30..1000) in the mediastinum below the carina, 10 mm opening",
    "esophagus": "approximate: 9 mm tube anterior-left of the vertebral bodies over the lung z range",
    "pleura": "5 mm shell around the lungs inside the body",
    "bone": "components of HU > 180 containing cortex (> 500 HU), metal excluded",
    "thyroid": "iodine-bright tissue (80-300 HU) within 30 mm of the trachea above the lung apices",
    "breast": "anterior chest wall soft tissue outside the thoracic cavity over the lung z range",
    "abdomen": "body below the diaphragm level (lung cross-section under half its maximum)",
    "lobes": "approximate geometric lobes (planes in the lung bounding box), not fissure-based",
    "aorta": "descending/abdominal aorta only: largest inscribed circle left-anterior of the spine, tracked per slice",
}


def _classical(volume: CTVolume, timings: dict[str, float]) -> RegionResult:
    from vision import regions_classical as rc
    from vision.regions_ops import UpsampledMasks, block_mean

    t0 = time.perf_counter()
    factors = work_factors(volume.spacing)
    hu = block_mean(volume.array, factors)
    sp = tuple(float(s) * f for s, f in zip(volume.spacing, factors))
    timings["downsample"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    regions, structures, info = rc.segment(hu, sp, _right_is_plus_x(volume))
    timings["segment"] = time.perf_counter() - t0
    absent = _absent(regions, sp)
    for k in absent:
        regions[k] = np.zeros(hu.shape, bool)
    info.update(backend="classical", factors=factors, work_spacing=sp)
    method = {k: CLASSICAL_METHODS[k] for k in REGION_KEYS}
    method.update({k: CLASSICAL_METHODS["lobes"] for k in structures if "_lobe_" in k})
    method["aorta"] = CLASSICAL_METHODS["aorta"]
    return RegionResult(masks=UpsampledMasks(regions, factors, volume.shape),
                        structures=UpsampledMasks(structures, factors, volume.shape), absent=absent, method=method,
                        timings=timings, info=info,
                        work={"hu": hu, "spacing": sp, "factors": factors, "masks": regions,
                              "structures": structures})


def from_labelmap(volume: CTVolume, labels: np.ndarray, timings: dict[str, float] | None = None) -> RegionResult:
    """Build a RegionResult from a TotalSegmentator v2 'total' label map in the volume grid.

    Regions TotalSegmentator has no class for (pleura, breast) and structures it lacks (body, metal) come from the
    classical path, run on the same volume.
    """
    from vision.totalseg import region_masks_from_labelmap

    timings = timings if timings is not None else {}
    if labels.shape != volume.shape:
        raise CTScribeError(f"label map shape {labels.shape} does not match the volume {volume.shape}; "
                            "resample the label map to the CT grid first")
    classical = _classical(volume, timings)
    ts_regions, ts_structs = region_masks_from_labelmap(labels)
    factors = classical.work["factors"]
    wm = dict(classical.work["masks"])
    ws = dict(classical.work["structures"])
    masks = dict(classical.masks.items())
    structs = {k: classical.structures[k] for k in classical.structures}
    method = dict(classical.method)
    for k, m in ts_regions.items():
        masks[k], method[k] = m, "TotalSegmentator v2 'total' classes (registry mapping)"
        wm[k] = _to_work(m, factors, wm[k].shape)
    for k, m in ts_structs.items():
        if m.any():
            structs[k], method[k] = m, "TotalSegmentator v2 'total' classes"
            ws[k] = _to_work(m, factors, wm["lung"].shape)
    absent = _absent(wm, classical.work["spacing"])
    info = dict(classical.info, backend="totalsegmentator")
    work = dict(classical.work, masks=wm, structures=ws)
    return RegionResult(masks=masks, structures=structs, absent=absent, method=method, timings=timings, info=info,
                        work=work)


def _to_work(m: np.ndarray, factors, shape) -> np.ndarray:
    from vision.regions_ops import block_mean

    return block_mean(m.astype(np.float32), factors)[: shape[0], : shape[1], : shape[2]] >= 0.5


def compute_regions(volume: CTVolume, *, backend: str = "auto") -> RegionResult:
    """Region masks for one CT volume.

    Args:
        volume: a ``CTVolume`` (HU, RAS voxel order, spacing in mm).
        backend: ``"auto"`` (TotalSegmentator when installed with weights, else classical), ``"classical"`` or
            ``"totalsegmentator"`` (error when unavailable).

    Returns:
        RegionResult with masks for the 10 regions (``vision.registry.REGION_KEYS``) in the volume grid.
    """
    if backend not in BACKENDS:
        from vision.errors import ConfigError

        raise ConfigError(f"unknown regions backend {backend!r}; use one of {', '.join(BACKENDS)}")
    _check(volume)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if backend in ("auto", "totalsegmentator"):
        from vision import totalseg

        if backend == "totalsegmentator" or totalseg.available():
            try:
                labels = totalseg.run_totalsegmentator(volume)
                timings["totalsegmentator"] = time.perf_counter() - t0
                res = from_labelmap(volume, labels, timings)
                res.timings["total"] = time.perf_counter() - t0
                return res
            except CTScribeError:
                if backend == "totalsegmentator":
                    raise
                log.warning("TotalSegmentator unavailable at run time; using the classical region path")
    res = _classical(volume, timings)
    res.timings["total"] = time.perf_counter() - t0
    return res
