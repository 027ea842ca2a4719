"""Config, registry and CLI plumbing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatapp.cli import main
from chatapp.config import load_config
from vision.errors import ConfigError, CTScribeError
from vision.registry import FINDING_NAMES, FINDINGS, REGION_KEYS, finding, region

CTRATE_COLUMNS = ("Medical material,Arterial wall calcification,Cardiomegaly,Pericardial effusion,Coronary artery "
                  "wall calcification,Hiatal hernia,Lymphadenopathy,Emphysema,Atelectasis,Lung nodule,Lung opacity,"
                  "Pulmonary fibrotic sequela,Pleural effusion,Mosaic attenuation pattern,Peribronchial thickening,"
                  "Consolidation,Bronchiectasis,Interlobular septal thickening").split(",")


def test_findings_follow_ctrate_column_order():
    assert list(FINDING_NAMES) == CTRATE_COLUMNS
    assert len({f.key for f in FINDINGS}) == 18
    assert all(f.region in REGION_KEYS for f in FINDINGS)


def test_regions_follow_radgenome_order():
    assert REGION_KEYS == ("lung", "trachea_and_bronchi", "mediastinum", "heart", "esophagus", "pleura", "bone",
                           "thyroid", "breast", "abdomen")
    assert region("trachea and bronchie").key == "trachea_and_bronchi"
    assert finding("lung NODULE").key == "lung_nodule"
    with pytest.raises(KeyError):
        finding("unicorn")


def test_registry_import_is_light():
    code = "import sys, vision, vision.registry; bad=[m for m in ('torch','chromadb','gradio','bitsandbytes') if m in sys.modules]; print(bad); assert not bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(overrides=["model.llm.quantization=8bit", "app.port=9000", "new.section.key=[1, 2]"])
    assert cfg.get("model.llm.quantization") == "8bit"
    assert cfg.get("app.port") == 9000
    assert cfg.get("new.section.key") == [1, 2]
    assert cfg.get("app.host") == "127.0.0.1"
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["nonsense"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    child = tmp_path / "child.yaml"
    child.write_text("app:\n  port: 1234\n")
    cfg = load_config(child)
    assert cfg.get("app.port") == 1234 and cfg.get("app.host") == "127.0.0.1"
    assert issubclass(ConfigError, CTScribeError) and issubclass(CTScribeError, ValueError)


def test_data_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CTSCRIBE_HOME", str(tmp_path / "h"))
    assert load_config().data_dir == tmp_path / "h"


def test_cli_user_error_exits_2_with_one_line(capsys):
    pytest.importorskip("chatapp.commands.inspect")
    rc = main(["--set", "broken", "inspect", "x"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err
