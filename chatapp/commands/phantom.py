"""``ctscribe phantom``: write a synthetic chest CT with its ground truth (a thin wrapper over vision.phantom)."""

from __future__ import annotations

import argparse
import json

HELP = ("Generate a synthetic chest CT phantom with ground-truth regions, finding masks, labels, measurements and a "
        "reference report.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same phantom)")
    parser.add_argument("--findings", default="",
                        help='comma-separated CT-RATE names or keys, e.g. "Lung nodule,Pleural effusion", or a JSON '
                             'object of parameters, e.g. \'{"Lung nodule": {"size_mm": 8, "side": "right"}}\'')
    parser.add_argument("--random-findings", type=float, default=None, metavar="P",
                        help="instead of --findings: each finding present with probability P (random parameters)")
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 128), metavar=("X", "Y", "Z"),
                        help="matrix size in voxels (RAS order)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.4, 1.4, 2.5), metavar=("X", "Y", "Z"),
                        help="voxel size in mm")
    parser.add_argument("--contrast", action="store_true", help="contrast-enhanced blood pool")
    parser.add_argument("--structures", action="store_true", help="also write structures/<name>.nii.gz")
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace, config) -> int:
    from vision.phantom import PhantomSpecError, make_phantom, random_findings

    spec: object = args.findings
    text = (args.findings or "").strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise PhantomSpecError(f"--findings looks like JSON but does not parse ({e.msg} at column {e.colno}); "
                                   f"pass a JSON object or a comma-separated list of finding names") from None
    if args.random_findings is not None:
        if text:
            raise PhantomSpecError("give either --findings or --random-findings, not both")
        spec = random_findings(args.seed, p=args.random_findings)
    ph = make_phantom(args.seed, shape=tuple(args.shape), spacing=tuple(args.spacing), findings=spec,
                      contrast=args.contrast)
    out = ph.save(args.out, structures=args.structures)
    present = [name for name, v in ph.labels.items() if v]
    print(json.dumps({"out": str(out), "shape": list(ph.volume.shape), "spacing": list(ph.volume.spacing),
                      "findings": present}, indent=2))
    return 0
