"""Every malformed input gives its typed error with a helpful message, from the API and from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from malformed_corpus import BUILDERS, Case, build_case, build_corpus

from chatapp.cli import main
from vision.errors import CTScribeError, UnsafeArchiveError
from vision.io import load_ct

IDS = [b.__name__.strip("_") for b in BUILDERS]


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("malformed")


def _case(builder, root: Path) -> Case:
    return build_case(builder, root)


def test_corpus_has_at_least_20_distinct_cases(tmp_path):
    cases = build_corpus(tmp_path)
    assert len(cases) >= 20
    assert len({c.name for c in cases}) == len(cases)
    assert len({c.error for c in cases}) >= 7  # exercises the whole exception family


@pytest.mark.parametrize("builder", BUILDERS, ids=IDS)
def test_load_ct_raises_typed_helpful_error(builder, corpus_root):
    case = _case(builder, corpus_root)
    with pytest.raises(CTScribeError) as info:
        load_ct(case.path, **case.kwargs)
    err = info.value
    assert type(err) is case.error, f"{case.name}: got {type(err).__name__}: {err}"
    assert isinstance(err, ValueError)
    msg = str(err).lower()
    for word in case.words:
        assert word in msg, f"{case.name}: {word!r} not in message {str(err)!r}"
    assert "traceback" not in msg and len(msg) < 600


def _cli_args(case: Case) -> list[str] | None:
    if isinstance(case.path, list):
        return None
    args: list[str] = []
    limits = case.kwargs.get("limits")
    if limits is not None:
        args += ["--set", f"vision.zip_max_total_mb={limits.zip_max_total_mb}"]
    args += ["inspect", str(case.path), "--no-png"]
    if "spacing" in case.kwargs:
        args += ["--spacing", *[str(s) for s in case.kwargs["spacing"]]]
    return args


@pytest.mark.parametrize("builder", BUILDERS, ids=IDS)
def test_cli_exits_2_with_one_line(builder, corpus_root, capsys):
    case = _case(builder, corpus_root)
    args = _cli_args(case)
    assert args is not None
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctscribe inspect: error: "), err


def test_console_script_prints_no_traceback(corpus_root):
    case = _case(BUILDERS[IDS.index("zip_slip")], corpus_root)
    r = subprocess.run([sys.executable, "-m", "chatapp.cli", "inspect", str(case.path), "--no-png"],
                       capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "escapes the extraction folder" in r.stderr
    assert r.stdout == ""


def _zip_tmp_dirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("ctscribe-zip-")}


def test_zip_slip_writes_nothing_outside_and_temp_dirs_are_removed(tmp_path, monkeypatch):
    private_tmp = tmp_path / "tmp"  # a private temp root: other processes' extractions cannot make this flaky
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    before = _zip_tmp_dirs()
    assert before == set()
    cases = {b.__name__: build_case(b, tmp_path) for b in BUILDERS if "zip" in b.__name__ or "slip" in b.__name__
             or "bomb" in b.__name__ or "symlink" in b.__name__}
    for case in cases.values():
        with pytest.raises(CTScribeError):
            load_ct(case.path, **case.kwargs)
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path.parent / "evil.dcm").exists()
    assert not Path("/tmp/ctscribe-evil.dcm").exists()
    assert _zip_tmp_dirs() <= before


def test_zip_header_lying_about_size_is_stopped(tmp_path):
    """An entry whose central directory claims a small size but inflates to more is cut off."""
    import zipfile

    p = tmp_path / "liar.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", os.urandom(4096))
    data = bytearray(p.read_bytes())
    # patch the uncompressed size (local header offset 22, central directory entry offset 24) to 100 bytes
    data[22:26] = (100).to_bytes(4, "little")
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (100).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    with pytest.raises((UnsafeArchiveError, CTScribeError)) as info:
        load_ct(p)
    assert "zip" in str(info.value).lower()
