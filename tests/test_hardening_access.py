"""Access rules: no public bind without a password, upload limits, per-session temp dirs, no remote code, no pickles."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatapp.commands import serve
from chatapp.config import load_config
from chatapp.sessions import Session
from vision.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _args(host=None, port=None):
    return argparse.Namespace(host=host, port=port, pipeline=None)


# ------------------------------------------------------------------------------------------------- bind + auth
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "example.org", "LOCALHOST",
                                  "::ffff:127.0.0.1", "127.0.0.1.nip.io", ""])
def test_non_loopback_bind_without_password_is_refused(host):
    cfg = load_config()
    if host == "":  # empty --host falls back to the config's host, which is loopback
        assert serve.serve_settings(_args(host), cfg, env={})["host"] == "127.0.0.1"
        return
    with pytest.raises(ConfigError, match="refusing to serve"):
        serve.serve_settings(_args(host), cfg, env={})
    with pytest.raises(ConfigError, match="refusing to serve"):  # same when the host comes from the config
        serve.serve_settings(_args(), load_config(overrides=[f"app.host='{host}'"]), env={})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_password(host):
    s = serve.serve_settings(_args(host), load_config(), env={})
    assert s["host"] == host and s["auth"] is None


def test_public_bind_with_credentials_is_allowed_and_uses_them(tmp_path):
    s = serve.serve_settings(_args("0.0.0.0"), load_config(), env={"CTSCRIBE_AUTH": "alice:s3cret"})
    assert s["auth"] == [("alice", "s3cret")]
    f = tmp_path / "users.txt"
    f.write_text("# team\nbob:pw1\ncarol:pw2\n")
    s = serve.serve_settings(_args("0.0.0.0"), load_config(overrides=[f"app.auth={f}"]), env={})
    assert s["auth"] == [("bob", "pw1"), ("carol", "pw2")]


@pytest.mark.parametrize("value", ["['', '']", "['a', '']", "nouser", "':pw'", "'user:'"])
def test_empty_or_malformed_credentials_are_refused(value):
    with pytest.raises(ConfigError):
        serve.serve_settings(_args("0.0.0.0"), load_config(overrides=[f"app.auth={value}"]), env={})


@pytest.mark.parametrize("env", ["alice", ":pw", "alice:"])
def test_malformed_env_credentials_are_refused(env):
    with pytest.raises(ConfigError):
        serve.serve_settings(_args("0.0.0.0"), load_config(), env={"CTSCRIBE_AUTH": env})


def test_cli_serve_public_without_auth_exits_2_before_starting_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CTSCRIBE_AUTH"}
    r = subprocess.run([sys.executable, "-m", "chatapp.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                       check=False)
    assert r.returncode == 2
    assert "refusing to serve on 0.0.0.0" in r.stderr and "Traceback" not in r.stderr
    assert "serving on" not in r.stdout


def test_upload_limit_comes_from_the_config():
    s = serve.serve_settings(_args(), load_config(overrides=["app.max_upload_mb=3"]), env={})
    assert s["max_file_size"] == "3mb"
    assert serve.serve_settings(_args(), load_config(), env={})["max_file_size"] == "1024mb"


# ---------------------------------------------------------------------------------------------- session temp dirs
def test_uploads_are_copied_into_a_private_per_session_dir_and_removed(tmp_path):
    from chatapp.ui.callbacks import prepare_input

    root = tmp_path / "sessions"
    a, b = Session.create(root), Session.create(root)
    assert a.dir != b.dir and a.dir.parent == b.dir.parent == root
    assert stat.S_IMODE(a.dir.stat().st_mode) == 0o700
    ups = []
    for i, name in enumerate(["IM1.dcm", "IM2.dcm", "..%2fevil.dcm", "患者.dcm"]):
        p = tmp_path / "gradio" / str(i) / name
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x" * 10)
        ups.append(str(p))
    folder = prepare_input(a, ups)
    assert folder.parent == a.dir
    copied = sorted(folder.iterdir())
    assert len(copied) == 4 and all(c.resolve().parent == folder.resolve() for c in copied)
    assert not list(b.dir.iterdir())  # nothing reaches the other session
    a.reset()
    assert a.dir.exists() and not list(a.dir.iterdir())
    prepare_input(a, ups)
    a.close()
    assert not a.dir.exists() and b.dir.exists()
    b.close()


# ---------------------------------------------------------------------------------------------- code scanning
def _tracked_sources() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py", "*.yaml", "*.yml", "*.toml", "*.cfg", "*.json", "Dockerfile*"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=True).stdout.split()
    files = [ROOT / f for f in out if (ROOT / f).is_file()]
    assert len(files) > 50
    return files


def test_no_trust_remote_code_anywhere():
    """``trust_remote_code`` may be named in prose, never turned on (keyword, dict key or config key)."""
    bad = re.compile(r"""trust_remote_code["']?\s*[=:]\s*(?!False\b|false\b)\S""")
    hits = [f"{f.relative_to(ROOT)}:{n}" for f in _tracked_sources()
            for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if bad.search(line)]
    assert not hits, hits


def test_no_unsafe_deserialisation_in_package_code():
    """Package code never unpickles: no pickle.load(s), no allow_pickle=True, torch.load only with weights_only."""
    pkg = [f for f in _tracked_sources() if f.suffix == ".py" and f.relative_to(ROOT).parts[0] in
           ("vision", "chatapp", "retrieval")]
    problems = []
    for f in pkg:
        text = f.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|\bjoblib\.load\(|\bdill\.", code):
                problems.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
            if re.search(r"\btorch\.load\(", code) and "weights_only=True" not in code:
                problems.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not problems, problems


# ---------------------------------------------------------------------------------------------- checkpoints
def _ckpt_dir(tmp_path: Path) -> Path:
    from chatapp.checkpoint import FORMAT
    from vision.registry import FINDING_NAMES

    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"format": FORMAT, "labels": list(FINDING_NAMES), "arch": {}}))
    return d


@pytest.mark.parametrize("name", ["model.pt", "pytorch_model.bin", "weights.pkl", "bridge.ckpt", "x.pth"])
def test_pickle_checkpoint_is_refused_with_a_message(tmp_path, name):
    from chatapp.checkpoint import load_checkpoint

    d = _ckpt_dir(tmp_path)
    marker = tmp_path / "pwned"
    (d / name).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(d)
    msg = str(info.value)
    assert "pickle" in msg and "safetensors" in msg
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    from chatapp.checkpoint import load_checkpoint

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    d = _ckpt_dir(tmp_path)
    (d / "bridge.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(d)
    assert not (tmp_path / "pwned").exists()


def test_model_from_config_refuses_a_pickle_checkpoint_before_loading_anything(tmp_path):
    from chatapp.model import CTScribeModel

    d = _ckpt_dir(tmp_path)
    (d / "model.pt").write_bytes(pickle.dumps([1]))
    with pytest.raises(CheckpointError, match="pickle"):
        CTScribeModel.from_config(load_config(overrides=[f"model.checkpoint={d}"]))


def test_pipeline_reports_a_refused_checkpoint_instead_of_crashing(tmp_path):
    from chatapp.pipeline import Pipeline

    d = _ckpt_dir(tmp_path)
    (d / "model.pt").write_bytes(pickle.dumps([1]))
    pipe = Pipeline(load_config(overrides=[f"model.checkpoint={d}"]), store=False)
    assert pipe.model is None
    assert any("pickle" in w for w in pipe.load_warnings)
