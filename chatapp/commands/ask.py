"""``ctscribe ask PATH "question"``: one question about one CT, answered from its findings or with citations."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "ask one question about a CT (presence, location, size, abnormalities, or a free question with citations)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="a CT file or DICOM folder/zip")
    parser.add_argument("question", help='e.g. "Is there a nodule in the right lung?"')
    parser.add_argument("--json", action="store_true", help="print answer, citations and evidence as JSON")


def run(args: argparse.Namespace, config: Any) -> int:
    import os

    from chatapp.pipeline import Pipeline
    from vision.errors import InputNotFoundError

    if not os.path.exists(args.path):
        raise InputNotFoundError(f"{args.path} does not exist; pass a CT file (NIfTI, NRRD, npy) or a DICOM folder")
    pipe = Pipeline.from_config(config)
    study = pipe.analyze(args.path)
    ans = pipe.ask(study, args.question)
    if args.json:
        print(json.dumps(ans.to_dict(), indent=1, default=str))
        return 0
    print(ans.text)
    if ans.citations:
        print("\nReferences:")
        for c in ans.citations:
            print(f"[{c.n}] {c.title}. {c.source}" + (f". {c.url}" if c.url else ""))
    if ans.weights:
        print(f"\nModel weights: {ans.weights}", file=sys.stderr)
    return 0
