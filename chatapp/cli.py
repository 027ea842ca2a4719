"""The ``ctscribe`` console script: one thin subcommand per Python API entry point.

Each subcommand lives in ``chatapp/commands/<name>.py`` and defines ``HELP``, ``add_arguments(parser)`` and
``run(args, config) -> int``. Command modules import only argparse-level code at module level; heavy libraries are
imported inside ``run`` so ``ctscribe --help`` is instant. User errors (``CTScribeError``) exit with status 2 and a
one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from vision.errors import CTScribeError

# name → module; the names are a public contract (users script against them).
COMMANDS: dict[str, str] = {
    "demo": "chatapp.commands.demo",
    "inspect": "chatapp.commands.inspect",
    "phantom": "chatapp.commands.phantom",
    "analyze": "chatapp.commands.analyze",
    "report": "chatapp.commands.report",
    "ask": "chatapp.commands.ask",
    "ingest": "chatapp.commands.ingest",
    "kb": "chatapp.commands.kb",
    "label": "chatapp.commands.label",
    "split-regions": "chatapp.commands.split_regions",
    "evaluate": "chatapp.commands.evaluate",
    "train": "chatapp.commands.train",
    "serve": "chatapp.commands.serve",
}

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    # Idle OpenMP threads sleep instead of spinning: with the default policy torch ran 3-20x slower whenever other
    # work shared the cores (two app users, the anatomy step beside the encoder); see bench/analysis.md.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def set_offline_env() -> None:
    """Offline by default: nothing may reach a model hub or a telemetry endpoint. Users can override any of these."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctscribe", description="Draft region-grounded 3D CT reports and answer "
                                     "questions about a scan. A drafting aid, not a diagnosis.")
    parser.add_argument("--config", default=None, help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.llm.quantization=8bit (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # subcommand not built yet
            raise
        p = sub.add_parser(name, help=getattr(mod, "HELP", ""), description=getattr(mod, "HELP", ""))
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    set_offline_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        from chatapp.config import load_config

        config = load_config(args.config, args.overrides)
        return int(args._module.run(args, config) or 0)
    except CTScribeError as e:
        msg = " ".join(str(e).split())
        print(f"ctscribe {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctscribe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
