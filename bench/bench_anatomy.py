"""Benchmark: all regions + measurements on the TCIA chest CT (512x512x99), against a same-process baseline.

Baseline: one plain ``scipy.ndimage.label`` pass over the thresholded full-resolution volume (HU < -400), the
cheapest step any lung segmentation needs. Prints wall seconds, CPU seconds of this process (the pipeline is
single-threaded, so on an idle 2-core machine wall ~ CPU; on a shared machine wall grows with the load average,
which is printed too) and the ratio. Target: <= 5 s on 2 cores.

    .venv/bin/python bench/bench_anatomy.py [PATH]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct-volumes_tcia-cptac-lscc" / \
    "cptac_lscc_C3N-00247_chest_ct_w_contrast.nii.gz"


def main(argv: list[str]) -> int:
    from vision.io import load_ct
    from vision.measure import measure
    from vision.regions import compute_regions

    path = Path(argv[0]) if argv else DEFAULT
    if not path.exists():
        print(f"skip: {path} not found")
        return 0
    vol = load_ct(path)
    t0 = time.perf_counter()
    ndi.label(np.asarray(vol.array) < -400)
    base = time.perf_counter() - t0
    best, best_cpu = None, None
    for _ in range(3):  # best of three: the machine is shared
        t0, c0 = time.perf_counter(), time.process_time()
        r = compute_regions(vol, backend="classical")
        ms = measure(vol, r)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        best = dt if best is None else min(best, dt)
        best_cpu = dc if best_cpu is None else min(best_cpu, dc)
    vals = {m.name: m.value for m in ms if m.name != "nodule"}
    print(f"volume {vol.shape} spacing {tuple(round(s, 3) for s in vol.spacing)} work factors {r.info['factors']}")
    print(f"baseline ndimage.label: {base:.2f} s")
    print(f"regions + measurements: {best:.2f} s wall, {best_cpu:.2f} s CPU  (ratio {best / base:.1f}x baseline; "
          "target <= 5 s)")
    la = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min): {la} on {os.cpu_count()} cores")
    print("steps:", {k: round(v, 2) for k, v in r.timings.items()})
    print("absent:", r.absent)
    print("lung L/R mL:", vals["lung_volume_left_ml"], vals["lung_volume_right_ml"], "LAA-950 %:",
          vals["laa950_percent"], "trachea mm:", vals["trachea_diameter_mm"], "heart mL:", vals["heart_volume_ml"], "CTR:",
          vals["cardiothoracic_ratio"], "aorta mm:", vals["aorta_max_diameter_mm"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
