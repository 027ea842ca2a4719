"""``ctscribe report PATH... --out DIR``: draft region-grounded reports in batch (resumable, accelerate-aware)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vision.errors import CTScribeError, InputNotFoundError

HELP = "draft region-grounded reports for one or more CTs; writes DIR/<study>.json and DIR/<study>.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="CT files or DICOM folders/zips")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--force", action="store_true", help="redo studies whose DIR/<study>.json already exists")
    parser.add_argument("--no-llm", action="store_true", help="keep the structured sentences (no LLM rephrasing)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _shard(paths: list[str]) -> tuple[list[str], bool]:
    """Split the inputs across processes when launched with ``accelerate launch`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return paths, True
    from accelerate import PartialState

    state = PartialState()
    with state.split_between_processes(paths) as mine:
        return list(mine), state.is_main_process


def report_one(pipe: Any, path: str, out: Path, force: bool = False) -> tuple[str, str]:
    """Analyse and report one input; returns (study name, "done" | "skipped")."""
    from chatapp.pipeline import study_name

    if not os.path.exists(path):
        raise InputNotFoundError(f"{path} does not exist; pass a CT file (NIfTI, NRRD, npy) or a DICOM folder/zip")
    name = study_name(path)
    if not force and (out / f"{name}.json").exists():
        return name, "skipped"
    study = pipe.analyze(path)
    if name != study_name(path, study.study_id):  # the stem was not usable: name by content hash
        name = study_name(path, study.study_id)
        if not force and (out / f"{name}.json").exists():
            return name, "skipped"
    rep = pipe.report(study)
    data: dict[str, Any] = rep.to_dict()
    data["study"] = study.summary()
    data["text"] = rep.to_text()
    _write_atomic(out / f"{name}.txt", rep.to_text() + "\n")
    _write_atomic(out / f"{name}.json", json.dumps(data, indent=1, default=str))  # written last: marks "done"
    return name, "done"


def run(args: argparse.Namespace, config: Any) -> int:
    from tqdm import tqdm

    from chatapp.pipeline import Pipeline

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths, main_proc = _shard(list(args.paths))
    pipe = Pipeline.from_config(config, **({"use_llm": False} if args.no_llm else {}))
    failed = 0
    bar = tqdm(paths, desc="ctscribe report", unit="study", disable=args.no_progress or not main_proc,
               file=sys.stderr)
    for p in bar:
        try:
            name, status = report_one(pipe, p, out, args.force)
            bar.set_postfix_str(f"{name}: {status}")
            if status == "skipped":
                print(f"skipped {name} (already in {out}; --force to redo)", file=sys.stderr)
        except CTScribeError as e:
            if len(args.paths) == 1:
                raise
            failed += 1
            print(f"ctscribe report: {p}: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1 if failed else 0
