"""Hounsfield-unit sanity: recognise voxel values that are not HU and fix them by an explicit rule, or refuse.

Rules (applied in this order, each correction is returned as a warning and logged, never silent):

1. NaN / inf anywhere → :class:`IntensityError`.
2. Values that look normalised (all within [-1.5, 1.5]) or like an 8-bit picture (all within [0, 255]) →
   :class:`IntensityError`: there is no safe way back to HU.
3. No voxel below -10 but soft tissue/bone present (some voxel > 800): the data are stored without the
   ``-1024`` intercept (raw unsigned scanner values, "offset by 1024") → subtract 1024, provided at least 30 % of
   the non-air voxels sit in the soft-tissue band 1024 ± 150; otherwise it is not a CT (e.g. MR) →
   :class:`NotCTError`.
4. Air sits near -2048 instead of -1000 (the rescale intercept applied twice, as reported for some CT-RATE
   volumes in CT-CLIP issue #50) → add 1024.
5. Anything still far outside the physical HU range (air level below -1300 or above -500 while there is air-like
   data, or values beyond [-10000, 40000]) → :class:`IntensityError`.

The "air level" is the 0.5th percentile of the voxels, ignoring the constant padding value some scanners write
outside the reconstruction circle (-2000, -3024, -32768) when it is the minimum of the volume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vision.errors import IntensityError, NotCTError

log = logging.getLogger(__name__)

OFFSET = 1024  # the usual CT RescaleIntercept magnitude


@dataclass(frozen=True)
class HUStats:
    """Summary used by the rules: min/max over all voxels, air level (HU) ignoring outside-FOV padding."""

    minimum: float
    maximum: float
    air_level: float


def _sample(array: np.ndarray, max_n: int = 2_000_000) -> np.ndarray:
    """A strided subsample (a view when possible) so the rules cost milliseconds on 512x512x500 volumes."""
    flat = array.ravel(order="K")  # a view for C- or F-contiguous arrays
    step = max(1, flat.size // max_n)
    return flat[::step]


def hu_stats(array: np.ndarray) -> HUStats:
    """Compute :class:`HUStats` for an (X, Y, Z) array of any real dtype."""
    sample = _sample(array)
    lo = float(array.min())
    hi = float(array.max())
    body = sample
    if lo < -1500:  # outside-FOV padding: drop the constant minimum before looking for air
        body = sample[sample != lo]
        if body.size == 0:
            body = sample
    air = float(np.percentile(body, 0.5))
    return HUStats(lo, hi, air)


def check_hu(array: np.ndarray, *, what: str = "the volume") -> tuple[np.ndarray, list[str]]:
    """Validate that ``array`` holds HU; correct a known offset by an explicit rule.

    Args:
        array: voxel values, shape (X, Y, Z), any integer or float dtype.
        what: how to name the input in messages.

    Returns:
        ``(array, warnings)``: the (possibly corrected) array, same dtype when the correction fits (int16 stays
        int16), and one human-readable warning per correction applied.

    Raises:
        IntensityError: NaN/inf, normalised or 8-bit data, or values outside any plausible HU range.
    """
    warnings: list[str] = []
    if array.dtype.kind == "f" and not np.isfinite(_sample(array, 50_000_000)).all():
        n = int(np.count_nonzero(~np.isfinite(array)))
        raise IntensityError(f"{what} contains {n} NaN/inf voxel values; CT voxels must be finite Hounsfield units. "
                             "Re-export the scan from the original DICOM (or fill the missing voxels) and try again.")
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise IntensityError(f"{what} has voxel type {array.dtype}, not numbers; give a CT in Hounsfield units.")
    s = hu_stats(array)
    if s.minimum >= -1.5 and s.maximum <= 1.5:
        raise IntensityError(f"{what} has values in [{s.minimum:.3g}, {s.maximum:.3g}]: it looks already normalised, "
                             "not Hounsfield units. Give the original CT (air about -1000 HU, water 0 HU).")
    if s.minimum >= 0 and s.maximum <= 255:
        raise IntensityError(f"{what} has values in [{s.minimum:.0f}, {s.maximum:.0f}]: it looks like an 8-bit "
                             "picture, not a CT in Hounsfield units. Give the original DICOM/NIfTI volume.")
    if s.minimum > 10000 or s.maximum > 40000 or s.minimum < -40000:
        raise IntensityError(f"{what} has values in [{s.minimum:.0f}, {s.maximum:.0f}], far outside Hounsfield units; "
                             "check the rescale slope/intercept of the export.")
    if s.minimum >= -10 and s.maximum > 800:
        sample = _sample(array).astype(np.float32)
        tissue = sample[sample > 200]  # not air/lung when stored without the intercept
        soft = float(np.mean((tissue >= OFFSET - 150) & (tissue <= OFFSET + 150))) if tissue.size else 0.0
        if soft < 0.3:
            raise NotCTError(f"{what} has no negative values (range {s.minimum:.0f} to {s.maximum:.0f}) and no "
                             f"soft-tissue peak near {OFFSET} ({soft:.0%} of tissue voxels): it does not look like a "
                             "CT (an MR image?). ctscribe reads CT in Hounsfield units only.")
        array = _shift(array, -OFFSET)
        warnings.append(f"HU correction: no voxel below -10 (min {s.minimum:.0f}, max {s.maximum:.0f}) means the data "
                        f"were stored without the rescale intercept; subtracted {OFFSET} so air is about -1000 HU.")
    elif -2300 <= s.air_level <= -1700:
        array = _shift(array, +OFFSET)
        warnings.append(f"HU correction: air at {s.air_level:.0f} HU instead of about -1000 means the rescale "
                        f"intercept was applied twice; added {OFFSET} (see CT-CLIP issue #50).")
    elif s.air_level < -1300:
        raise IntensityError(f"{what}: air level {s.air_level:.0f} HU is not plausible (expected about -1000). "
                             "The rescale slope/intercept are probably wrong; re-export from the original DICOM.")
    for w in warnings:
        log.warning(w)
    return array, warnings


def _shift(array: np.ndarray, delta: int) -> np.ndarray:
    """Add ``delta`` HU, keeping int16 when the result fits, else int32→int16 or float32."""
    if array.dtype.kind == "f":
        return (array.astype(np.float32, copy=False) + np.float32(delta)).astype(np.float32, copy=False)
    lo, hi = int(array.min()) + delta, int(array.max()) + delta
    out = array.astype(np.int32) + delta
    if -32768 <= lo and hi <= 32767:
        return out.astype(np.int16)
    return out.astype(np.float32)


def hu_percentiles(array: np.ndarray, qs: tuple[float, ...] = (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5)
                   ) -> dict[str, float]:
    """Exact HU percentiles (keys ``p0.5``, ``p1``, ...), plus ``min``, ``max``, ``mean``.

    int16 volumes use a 65536-bin histogram (one pass, no sort: ~0.1 s for 512x512x100); other dtypes a sort of
    a strided subsample of at most 4 M voxels.
    """
    out: dict[str, float] = {"min": float(array.min()), "max": float(array.max())}
    flat = array.ravel(order="K")
    if array.dtype == np.int16:
        counts = np.bincount((flat.astype(np.int32) + 32768), minlength=65536)
        cdf = np.cumsum(counts)
        n = int(cdf[-1])
        for q in qs:
            idx = int(np.searchsorted(cdf, max(1, int(np.ceil(q / 100.0 * n)))))
            out[f"p{q:g}"] = float(idx - 32768)
        out["mean"] = float(np.dot(counts, np.arange(-32768, 32768, dtype=np.float64)) / n)
    else:
        sample = _sample(array, 4_000_000).astype(np.float64)
        for q, v in zip(qs, np.percentile(sample, qs)):
            out[f"p{q:g}"] = float(v)
        out["mean"] = float(sample.mean())
    return out
