"""``ctscribe inspect PATH``: load a CT, print a JSON summary, write a PNG montage (a thin wrapper over vision)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HELP = ("Load a CT (NIfTI, NRRD, DICOM folder/zip/files, .npy/.npz with --spacing), print a JSON summary "
        "(shape, spacing, orientation, HU percentiles, series chosen, warnings) and write a PNG of axial/coronal/"
        "sagittal slices in lung and mediastinal windows.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="+", help="a volume file, a DICOM folder or zip, or several DICOM files")
    parser.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"), default=None,
                        help="voxel size in mm (required for .npy; overrides the header otherwise)")
    parser.add_argument("--png", default=None, metavar="FILE",
                        help="where to write the montage (default: <input name>_inspect.png in the current folder)")
    parser.add_argument("--no-png", action="store_true", help="do not write the montage")


def volume_summary(volume: Any) -> dict[str, Any]:
    """JSON-ready summary of a :class:`vision.volume.CTVolume` (shape in RAS voxel order, mm, HU percentiles)."""
    from vision.hu import hu_percentiles

    src = dict(volume.source)
    return {
        "shape": list(volume.shape),
        "spacing": [float(s) for s in volume.spacing],
        "orientation": volume.orientation,
        "original_orientation": src.get("original_orientation"),
        "dtype": str(volume.array.dtype),
        "extent_mm": [round(float(n * s), 2) for n, s in zip(volume.shape, volume.spacing)],
        "affine": [[round(float(v), 4) for v in row] for row in volume.affine],
        "hu": {k: round(v, 2) for k, v in hu_percentiles(volume.array).items()},
        "format": src.get("format"),
        "series": src.get("series"),
        "series_reason": src.get("series_reason"),
        "source": src,
        "metadata": dict(volume.metadata),
        "warnings": list(volume.warnings),
    }


def _default_png(path: str) -> Path:
    name = Path(path.rstrip("/")).name
    stem = re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.zip|\.npz|\.npy|\.dcm)$", "", name, flags=re.IGNORECASE) or "ct"
    return Path.cwd() / f"{stem}_inspect.png"


def run(args: argparse.Namespace, config: Any) -> int:
    from vision.io import IngestLimits, load_ct
    from vision.render import montage_png

    target = args.path[0] if len(args.path) == 1 else list(args.path)
    volume = load_ct(target, spacing=tuple(args.spacing) if args.spacing else None,
                     keep_age_sex=bool(config.get("privacy.keep_age_sex", False)),
                     limits=IngestLimits.from_config(config))
    summary = volume_summary(volume)
    if not args.no_png:
        png = Path(args.png) if args.png else _default_png(args.path[0])
        summary["png"] = str(montage_png(volume, png))
    print(json.dumps(summary, indent=2))
    return 0
