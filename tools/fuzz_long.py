"""The long fuzzing run (>= 10 minutes): the hypothesis targets of ``tests/test_fuzz.py``, round after round with
fresh random seeds, until the time budget is spent. Prints one JSON summary (examples per target, outcomes,
failures with their falsifying example) and exits 1 when any target failed.

    python tools/fuzz_long.py --minutes 12 --out fuzz_long.json

CI runs the same targets with a bounded number of examples (``pytest tests/test_fuzz.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="time budget (default 10)")
    ap.add_argument("--round", type=int, default=200, help="examples per target per round (default 200)")
    ap.add_argument("--out", default=None, help="also write the summary JSON here")
    args = ap.parse_args(argv)

    os.environ["CTSCRIBE_FUZZ_EXAMPLES"] = str(args.round)
    sys.path.insert(0, str(TESTS_DIR))  # the targets and their seed writers live with the tests
    import warnings

    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)  # pydicom warns on every damaged header
    import test_fuzz

    t0 = time.monotonic()
    deadline = t0 + 60 * args.minutes
    rounds: dict[str, int] = {}
    seconds: dict[str, float] = {}
    failures: list[dict] = []
    while time.monotonic() < deadline:
        for fn in test_fuzz.FUZZ_TESTS:
            if time.monotonic() >= deadline:
                break
            name = fn.__name__
            t = time.monotonic()
            try:
                fn()  # max_examples = --round (CTSCRIBE_FUZZ_EXAMPLES); a fresh random seed per call
            except Exception as e:  # noqa: BLE001 - a failing target is what we are looking for
                failures.append({"target": name, "error": f"{type(e).__name__}: {e}"[:2000],
                                 "traceback": traceback.format_exc()[-3000:]})
            rounds[name] = rounds.get(name, 0) + 1
            seconds[name] = seconds.get(name, 0.0) + time.monotonic() - t
    summary = {
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "examples_per_round": args.round,
        "rounds": rounds,
        "examples": {k: v * args.round for k, v in rounds.items()},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "outcomes": dict(sorted(test_fuzz.STATS.items())),
        "failures": failures,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
