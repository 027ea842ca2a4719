"""``ctscribe label``, ``split-regions`` and ``evaluate`` end to end on small files (own sentences only)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from chatapp.cli import main
from vision.registry import FINDING_NAMES, REGION_KEYS

REFS = {
    "s1": "Trachea and both main bronchi are patent. A 8 mm solid nodule in the right upper lobe. No pleural effusion.",
    "s2": "Mediastinal vascular structures and heart contour are normal. Small right pleural effusion.",
    "s3": "Calcified atheromatous plaques in the thoracic aorta. Centrilobular emphysema in both upper lobes.",
    "s4": "Subsegmental atelectasis at both lung bases. Small sliding hiatal hernia.",
}
PREDS = {
    "s1": "Trachea and both main bronchi are patent. A 6 mm nodule in the right upper lobe. No pleural effusion.",
    "s2": "Heart contour is normal. No pleural effusion.",
    "s3": "Atherosclerotic calcification of the aorta. Emphysema in both upper lobes.",
    "s5": "No pleural effusion.",
}


def write_csv(path, rows: dict[str, str], id_col="id", text_col="text"):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([id_col, text_col])
        w.writerows(rows.items())
    return path


def write_jsonl(path, rows: dict[str, str]):
    path.write_text("\n".join(json.dumps({"id": k, "text": v}) for k, v in rows.items()) + "\n")
    return path


def test_label_command(tmp_path, capsys):
    src = write_csv(tmp_path / "r.csv", REFS, id_col="AccessionNo", text_col="report_text")
    out = tmp_path / "labels.csv"
    assert main(["label", str(src), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["id", *FINDING_NAMES]
    by_id = {r["id"]: r for r in rows}
    assert by_id["s1"]["Lung nodule"] == "1" and by_id["s1"]["Pleural effusion"] == "0"
    assert by_id["s2"]["Pleural effusion"] == "1"
    assert by_id["s3"]["Arterial wall calcification"] == "1" and by_id["s3"]["Emphysema"] == "1"
    assert {by_id["s4"]["Atelectasis"], by_id["s4"]["Hiatal hernia"]} == {"1"}


def test_split_regions_command(tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", REFS)
    out = tmp_path / "regions.csv"
    assert main(["split-regions", str(src), "--out", str(out)]) == 0
    rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert list(next(iter(rows.values()))) == ["id", *REGION_KEYS]
    assert rows["s2"]["mediastinum"] == rows["s2"]["heart"] == "Mediastinal vascular structures and heart contour are normal."
    assert rows["s4"]["esophagus"] == "Small sliding hiatal hernia."
    assert rows["s1"]["thyroid"] == ""


def test_user_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    assert main(["label", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "--id-column" in err and "Traceback" not in err
    assert main(["label", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    (tmp_path / "x.txt").write_text("hello")
    assert main(["split-regions", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o.csv")]) == 2
    p = write_csv(tmp_path / "p.csv", {"a": "No effusion."})
    r = write_csv(tmp_path / "r.csv", {"b": "No effusion."})
    assert main(["evaluate", "--pred", str(p), "--ref", str(r), "--out", str(tmp_path / "o"), "--no-nlg"]) == 2
    assert "share no id" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(p), "--ref", str(p), "--out", str(tmp_path / "o"), "--no-nlg",
                 "--bertscore-model", str(tmp_path / "no-such-model")]) == 2
    assert "local model directory" in capsys.readouterr().err


def test_evaluate_without_nlg_and_with_a_label_file(tmp_path, capsys):
    p = write_jsonl(tmp_path / "p.jsonl", PREDS)
    r = write_csv(tmp_path / "r.csv", REFS)
    lab = tmp_path / "labels.csv"
    assert main(["label", str(r), "--out", str(lab)]) == 0
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(p), "--ref", str(r), "--out", str(out), "--no-nlg", "--bootstrap", "50",
                 "--ref-labels", str(lab)]) == 0
    d = json.loads((out / "metrics.json").read_text())
    assert d["n_pairs"] == 3
    assert d["ids"] == {"only_in_pred": ["s5"], "only_in_ref": ["s4"]}
    assert d["ce"]["reference_labels"] == "label file"
    assert set(d["ce"]) >= {"micro", "macro", "per_label", "crg", "ci95"}
    assert list(d["ce"]["per_label"]) == list(FINDING_NAMES)
    assert d["ce"]["per_label"]["Lung nodule"]["f1"] == 1.0  # s1 nodule found
    assert d["ce"]["per_label"]["Pleural effusion"]["recall"] == 0.0  # s2 effusion missed
    assert list(d["regions"]) == list(REGION_KEYS) and d["regions"]["lung"]["n_pairs"] == 2
    assert set(d["templates"]) == {"overall", "regions"}
    assert d["nlg"] == {} and "skipped" in d["nlg_note"]
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "Lung nodule" in html
    for external in ('src="http', "src='http", "<link", "url(http", "@import"):  # self-contained: loads nothing
        assert external not in html


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="Java is needed by pycocoevalcap")
def test_evaluate_full_writes_json_and_html(tmp_path, capsys):
    p = write_jsonl(tmp_path / "p.jsonl", PREDS)
    r = write_csv(tmp_path / "r.csv", REFS)
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(p), "--ref", str(r), "--out", str(out), "--bootstrap", "20"]) == 0
    d = json.loads((out / "metrics.json").read_text())
    keys = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert list(d["nlg"]) == keys and all(0 <= d["nlg"][k] for k in keys)
    assert d["nlg"]["BLEU-1"] > d["nlg"]["BLEU-4"] > 0
    assert set(d["nlg_ci95"]) == set(keys)
    assert set(d["regions"]["lung"]["nlg"]) == set(keys) and not d["regions_note"]  # per-region METEOR by default
    assert "pairs" in capsys.readouterr().out
    assert "METEOR" in (out / "report.html").read_text()
    out2 = tmp_path / "out2"
    assert main(["evaluate", "--pred", str(p), "--ref", str(r), "--out", str(out2), "--bootstrap", "0",
                 "--no-region-meteor"]) == 0
    d2 = json.loads((out2 / "metrics.json").read_text())
    assert set(d2["regions"]["lung"]["nlg"]) == set(keys) - {"METEOR"}  # turned off ...
    assert "--no-region-meteor" in d2["regions_note"]  # ... and metrics.json says so
    assert d2["nlg"]["METEOR"] == pytest.approx(d["nlg"]["METEOR"], abs=1e-9)


def test_evaluate_accepts_region_tables(tmp_path):
    """A table with one column per region (e.g. the output of split-regions) is scored region by region as given."""
    r = write_csv(tmp_path / "r.csv", REFS)
    rr = tmp_path / "r_regions.csv"
    assert main(["split-regions", str(r), "--out", str(rr)]) == 0
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(rr), "--ref", str(rr), "--out", str(out), "--no-nlg",
                 "--bootstrap", "0"]) == 0
    d = json.loads((out / "metrics.json").read_text())
    assert d["n_pairs"] == 4 and d["ce"]["micro"]["f1"] == 1.0 and d["ce"]["crg"] == 1.0
    assert d["regions"]["esophagus"]["n_pairs"] == 1 and d["regions"]["esophagus"]["ce"]["micro"]["f1"] == 1.0
