"""Load test over loopback: N concurrent sessions (gradio_client), each uploads its own study and asks Q questions.

Checks: no errors, every answer names its own study (the fake pipeline puts the study id in each answer; with the
real pipeline the study id shown in the status is compared), the server's RSS stays bounded. Prints JSON with
p50/p95 latencies of uploads and answers, error count and peak RSS.

    python tools/load_test.py --sessions 16 --questions 5                     # fake pipeline (app + transport)
    python tools/load_test.py --sessions 16 --questions 5 --pipeline real     # the real pipeline, no CT model

``tests/test_hardening_http.py`` uses ``start_server``/``stop_server``/``run_load`` with fewer sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKE = "fake_pipeline:FakePipeline"
QUESTIONS = ["Is there a lung nodule?", "What follow-up is advised?", "Are the lungs clear?", "Is the heart enlarged?",
             "Is there emphysema?", "Any pleural effusion?", "How big is the nodule?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, pipeline: str | None = FAKE, overrides: list[str] = (), timeout: float = 120.0,
                 env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, Path]:
    """``ctscribe serve`` on a free loopback port; returns (process, base URL, log path)."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "CTSCRIBE_HOME": str(home),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           **(env_extra or {})}
    env.pop("CTSCRIBE_AUTH", None)
    cmd = [sys.executable, "-m", "chatapp.cli"]
    for o in overrides:
        cmd += ["--set", o]
    cmd += ["serve", "--port", str(port)]
    if pipeline:
        cmd += ["--pipeline", pipeline]
    log = home / f"server-{port}.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url, log
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"server did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, MB (from /proc)."""
    total = 0
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def upload(c: Any, path: Path) -> str:
    """Upload one study through the app's upload event; returns the status markdown."""
    from gradio_client import handle_file

    out = c.predict([handle_file(str(path))], api_name="/on_upload")
    return str(out[0])


def ask(c: Any, question: str) -> str:
    """Ask one question; returns the last assistant message."""
    out = c.predict(question, api_name="/on_ask")
    hist = out[0]
    msgs = [m for m in hist if (m.get("role") if isinstance(m, dict) else None) == "assistant"]
    content = msgs[-1]["content"] if msgs else ""
    if isinstance(content, list):
        content = " ".join(str(x.get("text", x)) if isinstance(x, dict) else str(x) for x in content)
    return str(content)


def make_study(folder: Path, i: int, real: bool) -> Path:
    """A distinct study per session: a small NIfTI (fake pipeline: any bytes; real: a chest-like CT)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"study{i:02d}.nii.gz"
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from hardening_phi import chest_like
    from malformed_corpus import write_nifti

    vol = chest_like((48, 48, 24) if real else (16, 16, 8)).astype(np.int16)
    vol[i % vol.shape[0], 0, 0] = -999  # every study has different bytes
    write_nifti(p, vol, zooms=(6.0, 6.0, 10.0) if real else (1.0, 1.0, 1.0))
    return p


def session_run(url: str, study: Path, n_questions: int, real: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"upload_s": None, "answer_s": [], "errors": [], "foreign": 0}
    try:
        c = client(url)
        t = time.perf_counter()
        status = upload(c, study)
        rec["upload_s"] = time.perf_counter() - t
        m = re.search(r"\*\*Study\*\* `([0-9a-f]+)`", status)
        if not m:
            rec["errors"].append(f"upload: {status[:200]}")
            return rec
        sid = m.group(1)
        for q in QUESTIONS[:n_questions]:
            t = time.perf_counter()
            ans = ask(c, q)
            rec["answer_s"].append(time.perf_counter() - t)
            if not ans:
                rec["errors"].append(f"empty answer to {q!r}")
            elif not real and sid[:8] not in ans:  # fake pipeline: each answer names its study
                rec["foreign"] += 1
        if real:  # the session still holds its own study after the chat
            rec["own_study"] = sid
    except Exception as e:  # noqa: BLE001 - counted, reported
        rec["errors"].append(f"{type(e).__name__}: {e}"[:300])
    return rec


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, round(q * (len(xs) - 1)))], 3)


def run_load(url: str, pid: int, studies: list[Path], n_questions: int, real: bool = False) -> dict[str, Any]:
    """Run one session per study concurrently; returns the summary (latencies in s, RSS in MB)."""
    peak = [rss_mb(pid)]
    start_rss = peak[0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            peak.append(rss_mb(pid))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(studies)) as ex:
        recs = list(ex.map(lambda s: session_run(url, s, n_questions, real), studies))
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    ups = [r["upload_s"] for r in recs if r["upload_s"] is not None]
    ans = [a for r in recs for a in r["answer_s"]]
    return {"sessions": len(studies), "questions_per_session": n_questions, "wall_s": round(wall, 2),
            "errors": sum(len(r["errors"]) for r in recs), "error_samples": [e for r in recs for e in r["errors"]][:5],
            "answers": len(ans), "foreign_answers": sum(r["foreign"] for r in recs),
            "distinct_studies": len({r.get("own_study") for r in recs if r.get("own_study")}),
            "upload_p50_s": _pct(ups, 0.5), "upload_p95_s": _pct(ups, 0.95),
            "answer_p50_s": _pct(ans, 0.5), "answer_p95_s": _pct(ans, 0.95),
            "rss_start_mb": round(start_rss, 1), "rss_peak_mb": round(max(peak), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--questions", type=int, default=5)
    ap.add_argument("--pipeline", choices=("fake", "real"), default="fake")
    ap.add_argument("--out", default=None, help="also write the JSON summary here")
    args = ap.parse_args(argv)
    real = args.pipeline == "real"
    with tempfile.TemporaryDirectory(prefix="ctscribe-load-") as tmp:
        studies = [make_study(Path(tmp) / "studies", i, real) for i in range(args.sessions)]
        overrides = ["report.use_model=false", "report.use_llm=false"] if real else []
        proc, url, _log = start_server(Path(tmp) / "home", None if real else FAKE, overrides)
        try:
            summary = run_load(url, proc.pid, studies, args.questions, real)
            summary["pipeline"] = args.pipeline
            summary["server_alive"] = proc.poll() is None
        finally:
            stop_server(proc)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    ok = summary["errors"] == 0 and summary["foreign_answers"] == 0 and summary["server_alive"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
