"""Smoke test of the benchmark machinery: ``python -m bench.run --quick`` on a tiny input writes a well-formed
BENCHMARKS.md (machine header, summary table with ratios) and per-stage JSON; plots render to PNG.
Not a timing test: no figure is checked, only the format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_path

from bench.common import BenchResult, Row, Series, Timing
from bench.run import render

REPO = Path(__file__).resolve().parents[1]


def test_bench_run_quick_writes_report(tmp_path: Path) -> None:
    out, res = tmp_path / "B.md", tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "preprocess", "--out", str(out),
                           "--results", str(res)], cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# ctscribe benchmarks") and "--quick" in text
    assert "**Machine:**" in text and "monai " in text and "Load average" in text
    summary = text.split("## Summary", 1)[1].split("## Details", 1)[0]
    table = [line for line in summary.splitlines() if line.startswith("| load + preprocess")]
    assert len(table) == 2, text
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[2] == "median s" and float(cells[3]) > 0 and float(cells[4]) > 0 and cells[5].endswith("x")
    assert cells[7] in ("yes", "**no**") and cells[8] == "2"
    data = json.loads((res / "preprocess.json").read_text())
    assert [r["case"].split(",")[1].strip() for r in data["rows"]] == ["merlin preset", "astra preset"]
    assert all(r["ratio"] > 0 for r in data["rows"]) and data["peak_rss_mb"] > 0


def test_render_and_plot(tmp_path: Path) -> None:
    r = BenchResult("demo", rows=[Row("stage", "case", "median s", 2.0, 4.0, "base", "<= 1.0x", True, 5)],
                    series={"growth": Series("t vs n", "n", "s", [1, 2], {"ours": [1.0, 2.0]})})
    text = render([r, BenchResult("gone", skipped="no input")], {"date": "d", "commit": "c", "cpu": "x",
                  "cores_usable": 2, "mem_gib": 1, "os": "o", "python": "3.11", "loadavg": [0, 0, 0],
                  "versions": {}}, False, tmp_path / "plots", tmp_path / "B.md", None)
    assert "| stage | case | median s | 2 | 4 | 0.50x | <= 1.0x | yes | 5 |" in text
    assert "| gone | skipped: no input |" in text and "](plots/growth.png)" in text
    assert (tmp_path / "plots" / "growth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t = Timing([3.0, 1.0, 2.0, 10.0, 4.0])
    assert t.median == 3.0 and t.min == 1.0 and t.pct(100) == 10.0 and t.pct(50) == 3.0


def test_bench_run_rejects_unknown_stage(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--only", "nope", "--out",
                           str(tmp_path / "B.md")], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown stage" in proc.stderr


@pytest.mark.slow
@pytest.mark.data
def test_e2e_stage_runs_on_the_shipped_model(tmp_path: Path) -> None:
    """The e2e stage (TCIA upload → draft with the demo model, encoder forward, feature-cache hit, chat) runs to the
    end with the shipped token set: it broke silently once (a raw encoder forward without the region masks the
    region-token weights need). One repeat; no figure is checked."""
    import os

    shared_path("ct-volumes_tcia-cptac-lscc", "cptac_lscc_C3N-00247_chest_ct_w_contrast.nii.gz")
    out = tmp_path / "e2e.json"
    env = {**os.environ, "BENCH_E2E_REPEAT": "1", "CTSCRIBE_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "bench.bench_e2e", "--json", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert not data.get("skipped") and not data.get("error"), data
    stages = {r["stage"] for r in data["rows"]}
    assert {"upload → draft", "encoder", "chat TTFT"} <= stages
