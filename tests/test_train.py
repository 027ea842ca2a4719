"""Training: the loss falls on phantoms, and a CT-RATE-format fixture trains through `ctscribe train`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_model import ROOT, tiny_llm_dir  # noqa: F401  (session fixture)

from chatapp.cli import main
from vision.registry import FINDING_NAMES


def _phantom(seed: int, shape=(40, 40, 32)) -> tuple[np.ndarray, list[int], str]:
    """Minimal stand-in phantom (the real generator is vision.phantom): air, body, two lungs; 'Emphysema' darkens
    the lungs, 'Lung nodule' adds a dense blob, 'Pleural effusion' fills the lung bases with fluid."""
    try:
        from vision.phantom import make_phantom, random_findings

        ph = make_phantom(seed, shape=shape, spacing=(8.0, 8.0, 10.0), findings=random_findings(seed))
        return ph.volume.array.astype(np.float32), [int(ph.labels.get(n, 0)) for n in FINDING_NAMES], str(ph.report)
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    X, Y, Z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    a = np.full(shape, -1000.0, np.float32)
    a[(X ** 2 + Y ** 2) < 0.8] = 40.0
    lungs = (((X - 0.35) ** 2 + Y ** 2) < 0.12) | (((X + 0.35) ** 2 + Y ** 2) < 0.12)
    lab = [0] * len(FINDING_NAMES)
    emph, nod, eff = (rng.random(3) < 0.5)
    a[lungs] = -950.0 if emph else -850.0
    if nod:
        a[((X - 0.35) ** 2 + (Y - 0.1) ** 2 + Z ** 2) < 0.01] = 30.0
    if eff:
        a[lungs & (Z < -0.4)] = 10.0
    for name, on in (("Emphysema", emph), ("Lung nodule", nod), ("Pleural effusion", eff)):
        lab[FINDING_NAMES.index(name)] = int(on)
    a += rng.normal(0, 10, shape).astype(np.float32)
    words = [n.lower() for n, on in (("Emphysema", emph), ("Lung nodule", nod), ("Pleural effusion", eff)) if on]
    report = ("Findings: " + ", ".join(words) + ".") if words else "No acute findings."
    return a, lab, report


def _ctrate_fixture(root: Path, n: int = 4) -> dict:
    vols = root / "dataset" / "train"
    rows, labels = [], []
    for i in range(n):
        arr, lab, report = _phantom(i)
        name = f"train_{i + 1}_a_1.nii.gz"
        d = vols / f"train_{i + 1}" / f"train_{i + 1}_a"
        d.mkdir(parents=True)
        nib.save(nib.Nifti1Image(arr, np.diag([8.0, 8.0, 10.0, 1.0])), str(d / name))
        rows.append({"VolumeName": name, "ClinicalInformation_EN": "", "Technique_EN": "", "Findings_EN": report,
                     "Impressions_EN": ""})
        labels.append({"VolumeName": name, **dict(zip(FINDING_NAMES, lab))})
    for fname, data in (("train_reports.csv", rows), ("train_predicted_labels.csv", labels)):
        with open(root / fname, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    return {"kind": "ctrate", "volumes": "dataset/train", "reports_csv": "train_reports.csv",
            "labels_csv": "train_predicted_labels.csv"}


def _write_config(root: Path, data: dict, steps: int, lr: float, llm_dir: Path) -> Path:
    import yaml

    cfg = {"extends": str(ROOT / "configs" / "tiny.yaml"), "data_dir": str(root / "home"),
           "model": {"llm": {"name_or_path": str(llm_dir)}},
           "train": {"seed": 0, "data": data, "batch_size": 2, "save_every": 0, "max_target_tokens": 24,
                     "stages": [{"name": "align", "steps": steps, "lr": lr, "lm_weight": 1.0, "proto_weight": 1.0}]}}
    p = root / "train.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.slow
def test_ctrate_fixture_trains_through_cli(tmp_path, tiny_llm_dir, capsys):  # noqa: F811
    data = _ctrate_fixture(tmp_path)
    cfg = _write_config(tmp_path, data, steps=50, lr=1e-3, llm_dir=tiny_llm_dir)
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "train", "--max-steps", "3", "--output-dir", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["examples"] == 4
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in metrics)
    assert {"bridge.safetensors", "prototypes.safetensors", "encoder.safetensors", "config.json"} <= \
        {p.name for p in out.iterdir()}
    # resumable: a second run with a higher cap continues from step 3
    assert main(["--config", str(cfg), "train", "--max-steps", "5", "--output-dir", str(out), "--no-progress"]) == 0
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    # a bad data path is a one-line user error (exit 2), not a traceback
    bad = _write_config(tmp_path, {**data, "volumes": "nowhere"}, 5, 1e-3, tiny_llm_dir)
    assert main(["--config", str(bad), "train", "--max-steps", "1", "--output-dir", str(tmp_path / "x")]) == 2
    assert "volume folder" in capsys.readouterr().err


@pytest.mark.slow
def test_loss_falls_on_phantoms(tmp_path, tiny_llm_dir):  # noqa: F811
    from chatapp.config import load_config
    from chatapp.train import train

    data = _ctrate_fixture(tmp_path, n=6)
    cfg = load_config(_write_config(tmp_path, data, steps=20, lr=3e-3, llm_dir=tiny_llm_dir))
    train(cfg, output_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    proto = [r["proto_loss"] for r in rows]
    total = [r["loss"] for r in rows]
    # the tiny LLM is random and frozen (its LM loss stays near ln(vocab)); the bridge + prototypes must learn
    assert np.mean(proto[-5:]) < 0.8 * np.mean(proto[:5]), proto
    assert np.mean(total[-5:]) < np.mean(total[:5]), total
