"""The >= 50-case bad-input corpus through the Python API and the CLI (the app's HTTP API: test_hardening_http.py).

The 34 base cases of ``malformed_corpus`` are already pushed through ``load_ct`` and ``ctscribe inspect`` by
``test_malformed.py``; here the extra cases of ``hardening_cases`` go through the same two doors, plus
``Pipeline.analyze`` (the API the app calls) for the whole corpus, and temp-dir hygiene is checked for all of them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hardening_cases import ALL_BUILDERS, EXTRA_BUILDERS
from malformed_corpus import Case, build_case, ct_array, write_nifti

from chatapp.cli import main
from vision.errors import CTScribeError
from vision.io import load_ct

EXTRA_IDS = [b.__name__.strip("_") for b in EXTRA_BUILDERS]
ALL_IDS = [b.__name__.strip("_") for b in ALL_BUILDERS]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hardening-corpus")


def _check_error(case: Case, err: BaseException) -> None:
    assert type(err) is case.error, f"{case.name}: got {type(err).__name__}: {err}"
    msg = str(err).lower()
    for word in case.words:
        assert word in msg, f"{case.name}: {word!r} not in {str(err)!r}"
    assert "traceback" not in msg and len(msg) < 600


def test_corpus_has_at_least_50_distinct_cases(tmp_path):
    cases = [build_case(b, tmp_path) for b in ALL_BUILDERS]
    assert len(cases) >= 50
    assert len({c.name for c in cases}) == len(cases)
    # the list: each kind is present
    names = " ".join(c.name for c in cases)
    for kind in ("truncated_gzip", "png_renamed", "empty_file", "nifti_2d", "nifti_4d", "nan_inf", "1x1x100000",
                 "zero_size", "without_pixel", "mixed_series", "mr_modality", "uneven", "zip_bomb", "zip_slip",
                 "zip_symlink", "over_size_limit", "non_ascii", "wrong_magic"):
        assert kind in names, kind
    assert sum(c.upload is not None for c in cases) >= 45  # enough of them go over HTTP as one file


@pytest.mark.parametrize("builder", EXTRA_BUILDERS, ids=EXTRA_IDS)
def test_load_ct_gives_typed_helpful_error(builder, root):
    case = build_case(builder, root)
    with pytest.raises(CTScribeError) as info:
        load_ct(case.path, **case.kwargs)
    _check_error(case, info.value)


def _cli_args(case: Case) -> list[str]:
    args: list[str] = []
    limits = case.kwargs.get("limits")
    if limits is not None:
        args += ["--set", f"vision.max_upload_mb={limits.max_file_mb:g}", "--set",
                 f"vision.max_files={limits.max_files}"]
    args += ["inspect", str(case.path), "--no-png"]
    if "spacing" in case.kwargs:
        args += ["--spacing", *[str(s) for s in case.kwargs["spacing"]]]
    return args


@pytest.mark.parametrize("builder", EXTRA_BUILDERS, ids=EXTRA_IDS)
def test_cli_exits_2_with_one_line_message(builder, root, capsys):
    case = build_case(builder, root)
    rc = main(_cli_args(case))
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctscribe inspect: error: "), err
    for word in case.words:
        assert word in lines[0].lower(), (case.name, word, lines[0])


def _ctscribe_tmp() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("ctscribe-")}


def test_pipeline_analyze_refuses_every_case_and_leaves_no_temp_files(tmp_path, caplog):
    """The API the app and the CLI share: every case → its typed error; no ctscribe-* temp dir is left behind."""
    from chatapp.config import load_config
    from chatapp.pipeline import Pipeline

    pipe = Pipeline(load_config(), model=False, store=False)
    before = _ctscribe_tmp()
    n = 0
    for b in ALL_BUILDERS:
        case = build_case(b, tmp_path)
        if case.kwargs or isinstance(case.path, list):
            continue  # Pipeline.analyze takes default limits and no spacing
        with pytest.raises(CTScribeError) as info:
            pipe.analyze(case.path)
        _check_error(case, info.value)
        n += 1
    assert n >= 45
    assert _ctscribe_tmp() <= before
    assert not (tmp_path / "evil.dcm").exists() and not Path("/tmp/ctscribe-evil.dcm").exists()
    assert "Traceback" not in caplog.text


def test_non_ascii_file_name_of_a_good_scan_loads(tmp_path, capsys):
    p = write_nifti(tmp_path / "Grüße_患者 ü.nii.gz", ct_array((24, 20, 8)), zooms=(0.8, 0.8, 2.0))
    vol = load_ct(p)
    assert vol.shape == (24, 20, 8)
    assert main(["inspect", str(p), "--no-png"]) == 0
    assert '"shape"' in capsys.readouterr().out


def test_zip_bomb_does_not_inflate_memory(tmp_path):
    """A 16 MB-of-zeros entry (ratio ~1000x) is refused from its header, before extraction."""
    import resource

    case = build_case(next(b for b in ALL_BUILDERS if b.__name__ == "_zip_bomb_ratio"), tmp_path)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CTScribeError):
        load_ct(case.path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 64 * 1024  # KiB: < 64 MB more peak
