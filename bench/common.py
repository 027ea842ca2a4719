"""Shared helpers for the ``bench/`` scripts: timing medians, peak RSS, the machine header and the result format.

Every ``bench/bench_<stage>.py`` module defines ``run(quick: bool) -> BenchResult`` and ends with
``sys.exit(bench_main(run))``. ``bench.run`` runs each module in its own process (so peak RSS and import costs do
not leak from one stage into the next), collects the JSON they write and renders ``BENCHMARKS.md`` + plots.

Conventions:
    - times are seconds (``*_s``) or milliseconds (``*_ms``); throughputs are per second;
    - ``ratio`` is always *ours / baseline* for times and *ours / baseline* for throughputs: the ``target`` column
      says which direction passes (e.g. ``<= 1.0x`` for times, ``>= 0.8x`` for tokens/s);
    - a timing is the median of ``repeat`` runs after ``warmup`` runs that are not counted (>= 5 in full mode).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TCIA_NIFTI = SHARED / "ct-volumes_tcia-cptac-lscc" / "cptac_lscc_C3N-00247_chest_ct_w_contrast.nii.gz"
TS_DICOM = SHARED / "ct-volumes_totalsegmentator-tests" / "example_ct_dicom"
CTRATE_REPORTS = SHARED / "ct-rate_ctclip-text-classifier" / "train.csv"
MEDQUAD = SHARED / "rag_medquad" / "medquad_qa.jsonl.gz"

VERSIONED = ("torch", "numpy", "scipy", "monai", "nibabel", "pydicom", "SimpleITK", "chromadb", "transformers",
             "bitsandbytes", "sentence-transformers", "pycocoevalcap", "gradio", "llama_cpp_python")
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")  # change torch's behaviour under load


@dataclass
class Timing:
    """Wall-clock samples of one operation (seconds)."""

    samples: list[float]

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def min(self) -> float:
        return float(min(self.samples))

    def pct(self, q: float) -> float:
        """q-th percentile (0..100), linear interpolation (numpy's default)."""
        s = sorted(self.samples)
        if len(s) == 1:
            return s[0]
        pos = (len(s) - 1) * q / 100.0
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    @property
    def spread(self) -> float:
        """(max - min) / median: a quick noise indicator for the shared 2-core machine."""
        m = self.median
        return (max(self.samples) - min(self.samples)) / m if m > 0 else 0.0


def time_it(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times (not counted), then ``repeat`` times; returns the samples in seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return Timing(out)


def time_pair(ours: Callable[[], Any], base: Callable[[], Any], repeat: int = 5, warmup: int = 1
              ) -> tuple[Timing, Timing]:
    """Time two implementations interleaved (ours, base, ours, base, ...) so machine noise hits both alike."""
    for _ in range(warmup):
        ours()
        base()
    a, b = [], []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        ours()
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        base()
        b.append(time.perf_counter() - t0)
    return Timing(a), Timing(b)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any waited-for child process, MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, load, Python, package versions and git commit (the BENCHMARKS.md header)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_gib": _mem_gib(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "versions": {d: _version(d) for d in VERSIONED},
        "thread_env": {k: os.environ.get(k, "unset") for k in THREAD_ENV},
    }


@dataclass
class Row:
    """One line of the results table.

    Args:
        stage: issue stage name, e.g. ``"load + preprocess"``.
        case: input/setting, e.g. ``"TCIA NIfTI 512x512x99, merlin preset"``.
        metric: what ``ours``/``baseline`` measure, e.g. ``"median s"``, ``"p95 ms"``, ``"tok/s"``.
        ours: our value; baseline: the same-process baseline's value (``None`` when the stage has none).
        baseline_name: what the baseline is.
        target: the issue's target in words (``"<= 1.0x"``, ``"<= 0.5 s"``...).
        met: whether the target is met (``None``: informational).
        runs: samples behind ``ours``; note: anything a reader must know (noise, substitutions).
    """

    stage: str
    case: str
    metric: str
    ours: float
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    runs: int = 0
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline


@dataclass
class Series:
    """Data for one cost-growth plot: ``x`` values and one or more named ``y`` lines."""

    title: str
    xlabel: str
    ylabel: str
    x: list[float]
    y: dict[str, list[float]]
    logx: bool = False
    logy: bool = False


@dataclass
class BenchResult:
    """What one bench module reports."""

    name: str
    rows: list[Row] = field(default_factory=list)
    series: dict[str, Series] = field(default_factory=dict)  # file stem → plot
    details: list[str] = field(default_factory=list)  # extra markdown lines (profiles, breakdowns)
    peak_rss_mb: float = 0.0
    wall_s: float = 0.0
    skipped: str = ""  # non-empty: why the whole benchmark could not run here

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for r, row in zip(d["rows"], self.rows):
            r["ratio"] = row.ratio
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> BenchResult:
        rows = [Row(**{k: v for k, v in r.items() if k != "ratio"}) for r in d.get("rows", [])]
        series = {k: Series(**v) for k, v in d.get("series", {}).items()}
        return BenchResult(name=d["name"], rows=rows, series=series, details=list(d.get("details", [])),
                           peak_rss_mb=float(d.get("peak_rss_mb", 0.0)), wall_s=float(d.get("wall_s", 0.0)),
                           skipped=str(d.get("skipped", "")))


def fmt(v: float | None, digits: int = 3) -> str:
    """Compact number: 3 significant digits, '-' for None."""
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def print_result(res: BenchResult) -> None:
    """Human-readable summary on stdout (the module run on its own)."""
    if res.skipped:
        print(f"[{res.name}] skipped: {res.skipped}")
        return
    print(f"[{res.name}] wall {res.wall_s:.1f} s, peak RSS {res.peak_rss_mb:.0f} MiB")
    for r in res.rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        met = {True: "MET", False: "NOT met", None: ""}[r.met]
        print(f"  {r.stage:<22} {r.case:<44} {r.metric:<10} ours {fmt(r.ours):>8}  base {fmt(r.baseline):>8} "
              f"({ratio})  target {r.target} {met}  n={r.runs} {r.note}")
    for line in res.details:
        print("  " + line)


def env_offline() -> None:
    """The environment ``ctscribe`` sets for itself (offline switches, and whatever else the CLI sets, such as thread
    settings), so a benchmark measures what the app runs; taken from ``chatapp.cli.OFFLINE_ENV`` so they never
    drift. Must run before torch is imported to affect OpenMP settings (``bench.run`` passes it to each stage)."""
    from chatapp.cli import OFFLINE_ENV

    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def bench_main(run: Callable[[bool], BenchResult], argv: list[str] | None = None) -> int:
    """Command line shared by all bench modules: ``[--quick] [--json PATH]``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny inputs and few repeats (smoke test, not figures)")
    ap.add_argument("--json", type=Path, help="write the BenchResult here")
    args = ap.parse_args(argv)
    env_offline()
    t0 = time.perf_counter()
    res = run(args.quick)
    res.wall_s = time.perf_counter() - t0
    res.peak_rss_mb = max(res.peak_rss_mb, peak_rss_mb())
    print_result(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res.to_json(), indent=1))
    return 0


def repeats(quick: bool, full: int = 5) -> int:
    """Samples per timing: ``full`` (>= 5) normally, 2 in quick mode."""
    return 2 if quick else max(5, full)


def python() -> str:
    return sys.executable
