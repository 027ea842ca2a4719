"""Benchmark: memory of ``ctscribe serve`` and latency vs. concurrent sessions.

- **serve RSS**: starts ``ctscribe serve`` on a free loopback port, waits until it answers HTTP, and reads the
  process tree's resident memory (``VmRSS``; ``VmHWM`` = its peak) from ``/proc``. The app loads the model and the
  store on the first upload, so the loaded-pipeline peak is the ``e2e`` benchmark's process peak (same default
  config, one study); both are reported against the 3 GB target.
- **concurrency**: ``n`` sessions (threads) analyse their own volume at once through one ``Pipeline`` (regions +
  measurements, model and store off so the curve shows the scheduling/CPU sharing, not model loading); median
  per-session latency for n = 1, 2, 4, 8. Two cores: expect ~n/2 x beyond n = 2 (``app.concurrency_limit`` = 2
  queues the rest in the real app).

    .venv/bin/python -m bench.bench_serve [--quick] [--json out.json]
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import REPO, SHARED, BenchResult, Row, Series, bench_main

SMALL_CT = SHARED / "ct-volumes_totalsegmentator-tests" / "example_ct_sm.nii.gz"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_kib(pid: int, field: str) -> int:
    """Sum of a /proc status field (kB) over ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            todo += [int(k) for k in kids]
        except OSError:
            continue
    return total


def serve_rss(timeout_s: float = 240.0) -> tuple[float | None, float | None, float, str]:
    """(RSS MiB, peak MiB, startup s, note) of an idle ``ctscribe serve``."""
    exe = Path(sys.executable).with_name("ctscribe")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "chatapp.cli"]
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([*cmd, "serve", "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < timeout_s:
            if proc.poll() is not None:
                return None, None, 0.0, f"serve exited {proc.returncode}: {proc.stderr.read()[-300:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                up = time.perf_counter() - t0
                time.sleep(2)
                return (_tree_kib(proc.pid, "VmRSS") / 1024, _tree_kib(proc.pid, "VmHWM") / 1024, up,
                        "idle, models not loaded yet")
            except OSError:
                time.sleep(1)
        return None, None, 0.0, f"serve did not answer within {timeout_s:.0f} s"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


_LOADED_SCRIPT = r"""
import resource, sys, warnings
warnings.filterwarnings("ignore")
from chatapp.config import load_config
from chatapp.pipeline import Pipeline
pipe = Pipeline.from_config(load_config())
st = pipe.analyze(sys.argv[1])
pipe.report(st)
for _ in pipe.ask_stream(st, "What follow-up is recommended for a small solid lung nodule?"):
    pass
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def loaded_peak_mib(path: Path, timeout_s: float = 1500.0) -> tuple[float | None, str]:
    """Peak RSS (MiB) of a fresh process that does what the server does for one user: build the default pipeline
    (model + store), analyze ``path``, draft the report and answer one chat question. No benchmark baselines run in
    that process, so its peak is the app's own."""
    try:
        proc = subprocess.run([sys.executable, "-c", _LOADED_SCRIPT, str(path)], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return None, f"did not finish within {timeout_s:.0f} s"
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK_KIB"):
            return int(line.split()[1]) / 1024, "default config, one upload + report + one chat turn"
    return None, f"failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"


def run(quick: bool) -> BenchResult:
    from bench.common import TCIA_NIFTI

    res = BenchResult("serve")
    rss, hwm, up, note = serve_rss()
    if rss is not None:
        res.rows.append(Row("memory", "ctscribe serve, idle after start", "RSS MiB", rss, None, "", "<= 3 GB",
                            hwm <= 3072, 1, f"peak {hwm:.0f} MiB, up in {up:.1f} s; {note}"))
    else:
        res.details.append(f"serve RSS not measured: {note}")
    if quick or not SMALL_CT.exists():
        return res
    if TCIA_NIFTI.exists():
        peak, note = loaded_peak_mib(TCIA_NIFTI)
        if peak is not None:
            res.rows.append(Row("memory", "app process after one TCIA upload + report + chat", "peak RSS MiB", peak,
                                None, "", "<= 3 GB", peak <= 3072, 1, note))
        else:
            res.details.append(f"loaded-pipeline peak not measured: {note}")
    import warnings

    from chatapp.pipeline import Pipeline
    from vision.io import load_ct

    warnings.filterwarnings("ignore")
    base = load_ct(SMALL_CT)
    pipe = Pipeline.from_config(None, model=False, store=False, use_llm=False)
    pipe.settings["cache_size"] = 64
    pipe.analyze(base)  # warm-up
    counter = [0]

    def one() -> float:
        counter[0] += 1
        arr = np.asarray(base.array).copy()
        arr.flat[counter[0]] += 1  # a new content hash: no cache hit
        vol = type(base)(array=arr, spacing=base.spacing, affine=base.affine, metadata=dict(base.metadata))
        t = time.perf_counter()
        pipe.report(pipe.analyze(vol))
        return time.perf_counter() - t

    ns, med = [1, 2, 4, 8], []
    for n in ns:
        with ThreadPoolExecutor(n) as ex:
            lat = list(ex.map(lambda _: one(), range(n * 2)))
        med.append(statistics.median(lat))
    res.rows.append(Row("concurrency", f"{base.shape} CT, analyze + report, 8 sessions at once", "median s",
                        med[-1], med[0], "1 session", "report", None, 16))
    res.series["latency_vs_sessions"] = Series("Per-session latency vs. concurrent sessions (measurements only)",
                                               "concurrent sessions", "median latency (s)", [float(n) for n in ns],
                                               {"analyze + report": med})
    return res


if __name__ == "__main__":
    sys.exit(bench_main(run))
