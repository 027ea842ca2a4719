"""Write region masks and measurements to disk (what ``ctscribe analyze`` produces).

Masks are written in the *input's* geometry: for NIfTI inputs the voxel order and affine of the input file (the
canonical RAS arrays are re-oriented back), for other formats the loaded volume's RAS affine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vision.volume import CTVolume


def _input_geometry(path: str | Path, volume: CTVolume):
    """(affine, orientation transform from RAS arrays to the input's voxel order) for the output masks."""
    import nibabel as nib

    p = Path(path)
    if p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
        img = nib.load(str(p))
        if sorted(img.shape[:3]) == sorted(volume.shape):  # same grid, possibly another voxel order
            ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                                   nib.orientations.io_orientation(img.affine))
            return img.affine, ornt
    return volume.affine, None


def write_mask(mask: np.ndarray, path: Path, affine: np.ndarray, ornt) -> None:
    """Save a bool (X, Y, Z) RAS mask as uint8 NIfTI in the target geometry."""
    import nibabel as nib

    arr = np.asarray(mask, np.uint8)
    if ornt is not None:
        arr = nib.orientations.apply_orientation(arr, ornt)
    img = nib.Nifti1Image(np.ascontiguousarray(arr), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def analyze_volume(volume: CTVolume, *, backend: str = "auto"):
    """Regions and measurements for an in-memory volume: (RegionResult, list[Measurement])."""
    from vision.measure import measure
    from vision.regions import compute_regions

    regions = compute_regions(volume, backend=backend)
    return regions, measure(volume, regions)


def analyze_path(path: str | Path, out: str | Path, *, backend: str = "auto", write_masks: bool = True,
                 write_overlays: bool = False, progress: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Load ``path``, compute regions and measurements, write ``out/measurements.json`` and ``out/regions/*.nii.gz``.

    Returns a dict with ``measurements`` (list of dicts), ``absent`` (region keys) and ``seconds``.
    """
    from vision.io import load_ct
    from vision.measure import measure, overlays
    from vision.regions import compute_regions
    from vision.registry import REGION_KEYS

    step = progress or (lambda msg: None)
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    volume = load_ct(path)
    step("loaded")
    regions = compute_regions(volume, backend=backend)
    step("regions")
    meas = [m.to_dict() for m in measure(volume, regions)]
    (out / "measurements.json").write_text(json.dumps(meas, indent=1))
    (out / "regions.json").write_text(json.dumps({"summary": regions.summary(), "absent": regions.absent,
                                                  "method": regions.method, "backend": regions.info.get("backend"),
                                                  "contrast": regions.info.get("contrast")}, indent=1))
    step("measurements")
    if write_masks or write_overlays:
        affine, ornt = _input_geometry(path, volume)
        if write_masks:
            (out / "regions").mkdir(exist_ok=True)
            for k in REGION_KEYS:
                write_mask(regions.masks[k], out / "regions" / f"{k}.nii.gz", affine, ornt)
        if write_overlays:
            (out / "overlays").mkdir(exist_ok=True)
            for k, m in overlays(volume, regions).items():
                write_mask(m, out / "overlays" / f"{k}.nii.gz", affine, ornt)
    step("written")
    return {"measurements": meas, "absent": list(regions.absent), "seconds": time.perf_counter() - t0}
