"""Benchmark: how analysis cost grows with volume size (64³ up to 512x512x300), for the cost-growth plot.

Inputs are the TCIA chest CT resampled (trilinear, ``scipy.ndimage.zoom``) to each size, with the voxel spacing
scaled so the physical field of view stays the same; stages timed per size: ``load_ct`` of the NIfTI written to a
temp dir, ``preprocess`` (default preset), and ``compute_regions`` + ``measure`` (classical anatomy). The encoder and
the LLM work at a fixed size (the preset's), so they do not grow with the input and are not repeated here.
One run per size (the largest takes minutes on a loaded 2-core machine): a cost curve, not a median table.

    .venv/bin/python -m bench.bench_scaling [--quick] [--json out.json]
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.common import TCIA_NIFTI, BenchResult, Series, bench_main

SIZES = [(64, 64, 64), (128, 128, 96), (256, 256, 128), (512, 512, 99), (512, 512, 300)]


def run(quick: bool) -> BenchResult:
    import nibabel as nib
    from scipy import ndimage as ndi

    from vision.io import load_ct
    from vision.measure import measure
    from vision.preprocess import preprocess
    from vision.regions import compute_regions

    warnings.filterwarnings("ignore")
    res = BenchResult("scaling")
    if not TCIA_NIFTI.exists():
        res.skipped = "no input: ../shared/data is absent"
        return res
    src = load_ct(TCIA_NIFTI)
    arr = np.asarray(src.array, dtype=np.float32)
    sizes = SIZES[:2] if quick else SIZES
    preprocess(src, "astra")  # warm-up: MONAI/torch first-call costs must not land on the first size
    xs, t_load, t_pre, t_anat, t_total = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for shape in sizes:
            zoom = [s / a for s, a in zip(shape, arr.shape)]
            data = arr if tuple(shape) == arr.shape else ndi.zoom(arr, zoom, order=1)
            spacing = [sp / z for sp, z in zip(src.spacing, zoom)]
            p = Path(tmp) / f"ct_{'x'.join(map(str, shape))}.nii.gz"
            aff = np.diag([*spacing, 1.0])
            nib.save(nib.Nifti1Image(np.round(data).astype(np.int16), aff), str(p))
            del data
            t0 = time.perf_counter()
            vol = load_ct(p)
            t1 = time.perf_counter()
            preprocess(vol, "astra")
            t2 = time.perf_counter()
            reg = compute_regions(vol, backend="classical")
            measure(vol, reg)
            t3 = time.perf_counter()
            xs.append(float(np.prod(shape)) / 1e6)
            t_load.append(t1 - t0)
            t_pre.append(t2 - t1)
            t_anat.append(t3 - t2)
            t_total.append(t3 - t0)
            res.details.append(f"{shape}: load {t1 - t0:.2f} s, preprocess {t2 - t1:.2f} s, regions + measure "
                               f"{t3 - t2:.2f} s")
            p.unlink()
    res.series["analysis_vs_size"] = Series("Analysis time vs. volume size (1 run each)", "voxels (millions)",
                                            "seconds", xs, {"load": t_load, "preprocess": t_pre,
                                                            "regions + measure": t_anat, "total": t_total},
                                            logx=True, logy=True)
    return res


if __name__ == "__main__":
    sys.exit(bench_main(run))
