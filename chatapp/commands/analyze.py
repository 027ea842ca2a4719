"""``ctscribe analyze PATH --out DIR``: region masks and quantitative measurements for one CT."""

from __future__ import annotations

import argparse

HELP = "segment the 10 report regions and measure (lung volumes, LAA-950, nodules, calcium...) without a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="CT file or folder (NIfTI, DICOM folder/zip, NRRD, npy)")
    parser.add_argument("--out", required=True, help="output folder: measurements.json, regions/<region>.nii.gz")
    parser.add_argument("--backend", choices=("auto", "classical", "totalsegmentator"), default=None,
                        help="region backend (default: config regions.backend)")
    parser.add_argument("--no-masks", action="store_true", help="write measurements.json only")
    parser.add_argument("--overlays", action="store_true", help="also write overlays/<id>.nii.gz (nodules, calcium...)")


def run(args: argparse.Namespace, config) -> int:
    import json
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from vision.regions_io import analyze_path

    out = Path(args.out)
    backend = args.backend or (config.get("regions.backend") if config is not None else None) or "auto"
    with tqdm(total=4, desc="ctscribe analyze", file=sys.stderr, unit="step",
              disable=None if sys.stderr.isatty() else False) as bar:
        result = analyze_path(args.path, out, backend=backend, write_masks=not args.no_masks,
                              write_overlays=args.overlays, progress=lambda msg: (bar.set_postfix_str(msg),
                                                                                   bar.update(1)))
    print(json.dumps({"out": str(out), "absent": result["absent"], "measurements": len(result["measurements"]),
                      "seconds": round(result["seconds"], 2)}))
    return 0
