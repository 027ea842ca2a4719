"""``ctscribe demo``: phantom → NIfTI → load_ct → preprocess → summary + PNG montage (the README's first job)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

HELP = ("Generate a synthetic chest CT phantom, write it as NIfTI, load it back, preprocess it for the configured "
        "encoder preset, print a JSON summary and write a PNG montage. Needs no data and no network.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <data dir>/demo)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--preset", default=None, help="preprocessing preset (default: config vision.preset)")


def run(args: argparse.Namespace, config: Any) -> int:
    from chatapp.commands.inspect import volume_summary
    from vision.io import IngestLimits, load_ct
    from vision.phantom import make_phantom
    from vision.preprocess import preprocess
    from vision.render import montage_png

    out = Path(args.out) if args.out else config.data_dir / "demo"
    preset = args.preset or config.get("vision.preset", "astra")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    phantom = make_phantom(seed=args.seed)
    phantom.save(out)
    timings["phantom_s"] = time.perf_counter() - t
    t = time.perf_counter()
    volume = load_ct(out / "ct.nii.gz", limits=IngestLimits.from_config(config))
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    result = preprocess(volume, preset, config)
    timings["preprocess_s"] = time.perf_counter() - t
    png = montage_png(volume, out / "montage.png")
    summary = volume_summary(volume)
    summary.update({
        "phantom": {"seed": args.seed, "labels_positive": [k for k, v in phantom.labels.items() if v],
                    "files": str(out)},
        "preprocess": {"preset": result.preset_name, "tensor_shape": list(result.tensor.shape),
                       "tensor_range": [round(float(result.tensor.min()), 4), round(float(result.tensor.max()), 4)],
                       "params": result.params},
        "png": str(png),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    })
    print(json.dumps(summary, indent=2))
    return 0
