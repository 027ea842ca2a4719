"""The in-memory CT volume every ctscribe component consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CTVolume:
    """A CT volume in Hounsfield units, canonical RAS voxel order.

    Args:
        array: HU values, shape (X, Y, Z) with +X = Right→Left... precisely: voxel axes point to R, A, S
            (nibabel's "RAS+" closest canonical), dtype int16 or float32.
        spacing: voxel size in mm along (X, Y, Z).
        affine: 4x4 voxel→world (RAS+, mm) matrix matching ``array``.
        metadata: PHI-free acquisition metadata (modality, manufacturer, model, kvp, slice_thickness, kernel,
            contrast, series_description, ...). Never names, IDs, dates, institutions or addresses.
        source: a short, PHI-free description of where the volume came from (format, series chosen).
        warnings: human-readable notes about corrections applied while loading (HU fixes, resampling, ...).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def content_hash(self) -> str:
        """sha256 over voxels + geometry: the cache key for analyses and encoder features."""
        import hashlib

        h = hashlib.sha256()
        a = np.ascontiguousarray(self.array)
        h.update(str(a.dtype).encode())
        h.update(np.asarray(a.shape, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(self.affine, dtype=np.float64), 4).tobytes())
        h.update(memoryview(a).cast("B"))  # no copy of the voxels (same digest as a.tobytes())
        return h.hexdigest()
