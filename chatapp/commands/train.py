"""``ctscribe train``: train the bridge, prototypes and LoRA on accelerate (see chatapp.train)."""

from __future__ import annotations

import argparse

HELP = "train the vision-language bridge, prototype memory and LoRA (accelerate; CPU, GPU or `accelerate launch`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # `ctscribe train --config X` (the documented form) as well as `ctscribe --config X train`; SUPPRESS keeps the
    # top-level value when the option is not repeated here.
    parser.add_argument("--config", default=argparse.SUPPRESS, help="training YAML (e.g. configs/train-phantom.yaml)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps in total")
    parser.add_argument("--output-dir", default=None, help="checkpoint + metrics.jsonl directory (resumes if present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace, config) -> int:
    import json

    from chatapp.train import train

    summary = train(config, max_steps=args.max_steps, output_dir=args.output_dir, progress=not args.no_progress)
    print(json.dumps(summary, default=str))
    return 0
