"""Property-based fuzzing (hypothesis) of the loaders, the report labeler/router and the config parser.

The property is always the same: on any input the code either returns a valid result or raises a
:class:`~vision.errors.CTScribeError` (a message for the user); any other exception is a bug. Seeds are small valid
files (NIfTI, .nii.gz, NRRD, DICOM slice, DICOM zip, npy, npz) written once; hypothesis flips, overwrites, inserts,
deletes and truncates their bytes, biased towards the headers.

CI runs a bounded number of examples (``CTSCRIBE_FUZZ_EXAMPLES``, default sized for <= 60 s on 2 cores);
``tools/fuzz_long.py`` calls the same test functions again and again with fresh seeds for >= 10 minutes.
The functions take no pytest fixtures so the tool can call them directly.
"""

from __future__ import annotations

import functools
import gzip
import os
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from malformed_corpus import ct_array, write_dicom_series, write_dicom_slice, write_nifti

from vision.errors import CTScribeError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
EXAMPLES = int(os.environ.get("CTSCRIBE_FUZZ_EXAMPLES", "120"))
STATS: Counter = Counter()  # outcomes by target (ok / typed error), read by tools/fuzz_long.py
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------------------------------- seeds
@functools.cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fuzz-seeds-"))


@functools.cache
def seeds() -> dict[str, tuple[str, bytes]]:
    """name → (file name to write the mutant as, valid bytes)."""
    d = _workdir()
    vol = ct_array((12, 10, 6))
    out: dict[str, tuple[str, bytes]] = {}
    out["nii"] = ("scan.nii", write_nifti(d / "s.nii", vol, zooms=(0.8, 0.8, 2.0)).read_bytes())
    out["nii.gz"] = ("scan.nii.gz", write_nifti(d / "s.nii.gz", vol, zooms=(0.8, 0.8, 2.0)).read_bytes())
    import nrrd

    nrrd.write(str(d / "s.nrrd"), vol, {"space": "left-posterior-superior",
                                        "space directions": np.diag([0.8, 0.8, 2.0]).tolist(),
                                        "space origin": [0.0, 0.0, 0.0]})
    out["nrrd"] = ("scan.nrrd", (d / "s.nrrd").read_bytes())
    out["dcm"] = ("IM0001.dcm", write_dicom_slice(d / "one.dcm", (vol[:, :, 0].T + 1024).astype(np.uint16),
                                                  position=(0, 0, 0)).read_bytes())
    files = write_dicom_series(d / "series", vol, shuffle=False)
    zp = d / "series.zip"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
    out["zip"] = ("study.zip", zp.read_bytes())
    np.save(d / "s.npy", vol)
    out["npy"] = ("scan.npy", (d / "s.npy").read_bytes())
    np.savez(d / "s.npz", ct=vol, spacing=np.array([0.8, 0.8, 2.0]))
    out["npz"] = ("scan.npz", (d / "s.npz").read_bytes())
    return out


# ------------------------------------------------------------------------------------------------ mutations
_pos = st.one_of(st.integers(0, 600), st.integers(0, 2**31 - 1))  # half of the hits land in headers
mutation = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("set"), _pos, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("delete"), _pos, st.integers(1, 64)),
    st.tuples(st.just("truncate"), _pos, st.just(0)),
    st.tuples(st.just("int"), _pos, st.sampled_from([0, 1, 2, 3, 255, 256, 32767, 65535, 2**31 - 1, 2**32 - 1])),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    b = bytearray(data)
    for op, pos, arg in ops:
        n = len(b)
        if n == 0:
            break
        i = pos % n
        if op == "flip":
            b[i] ^= 1 << arg
        elif op == "set":
            b[i:i + len(arg)] = arg
        elif op == "insert":
            b[i:i] = arg
        elif op == "delete":
            del b[i:i + arg]
        elif op == "truncate":
            del b[i:]
        elif op == "int":  # overwrite a little-endian int32: sizes, offsets, dims
            b[i:i + 4] = int(arg).to_bytes(4, "little")
    return bytes(b)


def _load(name: str, data: bytes) -> None:
    """Write the mutant and load it; anything but a CTVolume or a CTScribeError fails the test."""
    from vision.io import IngestLimits, load_ct

    d = Path(tempfile.mkdtemp(prefix="fuzz-case-", dir=_workdir()))
    p = d / name
    p.write_bytes(data)
    spacing = (0.8, 0.8, 2.0) if name.endswith(".npy") else None
    try:
        vol = load_ct(p, spacing=spacing, limits=IngestLimits(max_voxels=2**22, zip_max_total_mb=64))
    except CTScribeError as e:
        assert str(e) and "Traceback" not in str(e)
        STATS[f"loader:{type(e).__name__}"] += 1
    else:
        assert vol.array.ndim == 3 and min(vol.shape) >= 3 and all(s > 0 for s in vol.spacing)
        assert np.isfinite(vol.affine).all()
        STATS["loader:ok"] += 1
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------- loaders
@FUZZ
@given(kind=st.sampled_from(["nii", "nii.gz", "nrrd", "dcm", "zip", "npy", "npz"]),
       ops=st.lists(mutation, min_size=1, max_size=6))
def test_fuzz_loaders_raw_bytes(kind, ops):
    name, data = seeds()[kind]
    _load(name, mutate(data, ops))


@pytest.mark.parametrize("kind,ops", [
    ("nii", [("set", 311, b"\x00\x00\x00\x00Y")]),  # sform with an axis nibabel cannot name (was a TypeError)
    ("npz", [("insert", 4, b"\x00")]),  # damaged npz member (was zipfile.BadZipFile)
    ("dcm", [("flip", 552, 0)]),  # unknown VR met on lazy element access (was NotImplementedError)
])
def test_fuzz_regressions(kind, ops):
    name, data = seeds()[kind]
    _load(name, mutate(data, ops))


def test_fuzz_regression_absurd_vox_offset_in_gzip():
    """vox_offset overwritten with a huge float (was OverflowError in zlib); found by tools/fuzz_long.py."""
    _load("scan.nii.gz", gzip.compress(mutate(seeds()["nii"][1], [("set", 111, b"_")]), compresslevel=1))


def test_fuzz_regression_dicom_number_that_is_not_one():
    """A DS value like '!.0' in one slice of a zip (was ValueError from float()); found by tools/fuzz_long.py."""
    _load("study.zip", _zip_mutant([("flip", 792, 4)], 0))


@FUZZ
@given(ops=st.lists(mutation, min_size=1, max_size=6))
def test_fuzz_nifti_header_inside_gzip(ops):
    """Mutate the uncompressed NIfTI, then gzip it: reaches the header checks instead of gzip's CRC."""
    _, data = seeds()["nii"]
    _load("scan.nii.gz", gzip.compress(mutate(data, ops), compresslevel=1))


@FUZZ
@given(ops=st.lists(mutation, min_size=1, max_size=4), entry=st.integers(0, 5))
def test_fuzz_dicom_inside_zip(ops, entry):
    """A valid zip whose DICOM slices are mutated (reaches pydicom and the series stacking)."""
    _load("study.zip", _zip_mutant(ops, entry))


def _zip_mutant(ops: list[tuple], entry: int) -> bytes:
    import io

    src = zipfile.ZipFile(io.BytesIO(seeds()["zip"][1]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for i, info in enumerate(src.infolist()):
            data = src.read(info)
            dst.writestr(info.filename, mutate(data, ops) if i == entry % len(src.infolist()) else data)
    return buf.getvalue()


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".nii", ".nii.gz", ".dcm", ".zip", ".nrrd", ".npy", ""]))
def test_fuzz_loaders_arbitrary_bytes(data, suffix):
    _load(f"upload{suffix}", data)


# ------------------------------------------------------------------------------------------- labeler / router
_words = st.sampled_from(["no", "not", "without", "nodule", "nodules", "emphysema", "effusion", "pleural", "heart",
                          "cardiomegaly", "aorta", "calcification", "coronary", "lymph", "node", "mediastinal",
                          "hilar", "consolidation", "atelectasis", "mosaic", "bronchiectasis", "opacity", "thickening",
                          "pericardial", "hernia", "lung", "right", "left", "upper", "lobe", "mm", "cm", "?", ",", ".",
                          ";", ":", "but", "however", "is", "was", "seen", "observed", "suspicious", "for", "(", ")",
                          "\n", "ü", "患者", "5.2", "-", "'", '"'])
report_text = st.one_of(st.text(max_size=400), st.lists(_words, max_size=120).map(" ".join))


@FUZZ
@given(text=report_text)
def test_fuzz_labeler(text):
    from chatapp.evaluation.labeler import find_mentions, label_report
    from vision.registry import FINDING_NAMES

    labels = label_report(text)
    assert list(labels) == list(FINDING_NAMES) and set(labels.values()) <= {0, 1}
    for m in find_mentions(text):
        assert 0 <= m.span[0] <= m.span[1] <= len(text)
        assert labels[m.finding] == 1 or m.negated
    STATS["labeler:ok"] += 1


@FUZZ
@given(text=report_text)
def test_fuzz_router(text):
    try:
        from chatapp.evaluation.router import route_sentence, split_regions
    except ImportError:  # the router is optional in this checkout
        return
    from vision.registry import REGION_KEYS

    assert set(route_sentence(text)) <= set(REGION_KEYS)
    regions = split_regions(text)
    assert set(regions) <= set(REGION_KEYS)
    assert all(isinstance(s, str) for ss in regions.values() for s in ss)
    STATS["router:ok"] += 1


def test_labeler_is_linear_on_long_hostile_text():
    """No catastrophic backtracking: 60 kB of repeated near-matches is labelled quickly."""
    import time

    from chatapp.evaluation.labeler import label_report

    text = ("no evidence of " + "pleural " * 40 + "thickening, " + "heart " * 40 + "is " * 30 + "\n") * 60
    t = time.perf_counter()
    label_report(text[:60000])
    assert time.perf_counter() - t < 10.0


# -------------------------------------------------------------------------------------------------- config
_yaml_atoms = st.sampled_from(["vision:", "  max_upload_mb: 5", "app:", "  auth: [a, b]", "extends: default.yaml",
                               "extends: [1, 2]", "extends: loop.yaml", "data_dir: [1]", "- a", "a: &x [*x]",
                               "report: 3", "model: {llm: null}", "!!python/object:os.system", "{", "]", "\t",
                               "key: \"unterminated", "[" * 200, "a: b: c"])
yaml_text = st.one_of(st.text(max_size=300), st.lists(_yaml_atoms, max_size=12).map("\n".join))


def _use(cfg) -> None:
    """What components do with a config: sections, dotted gets, the data dir, the ingest limits."""
    from vision.io import IngestLimits

    for name in ("vision", "app", "report", "model", "retrieval", "privacy"):
        try:
            cfg.section(name)
        except CTScribeError:
            pass
    cfg.get("model.llm.name_or_path")
    try:
        IngestLimits.from_config(cfg)
    except (CTScribeError, TypeError):  # a non-numeric limit: IngestLimits's own contract
        pass


@FUZZ
@given(text=yaml_text)
def test_fuzz_config_file(text):
    from chatapp.config import load_config

    d = _workdir() / "cfg"
    d.mkdir(exist_ok=True)
    p = d / "fuzz.yaml"
    p.write_bytes(text.encode("utf-8"))
    (d / "loop.yaml").write_text("extends: fuzz.yaml\n")
    try:
        cfg = load_config(p)
    except CTScribeError:
        STATS["config:error"] += 1
        return
    _use(cfg)
    STATS["config:ok"] += 1


@FUZZ
@given(overrides=st.lists(st.one_of(st.text(max_size=40), st.tuples(
    st.sampled_from(["vision", "app", "vision.max_upload_mb", "a..b", "", ".", "model.llm", "report.k"]),
    st.sampled_from(["1", "[", "null", "{a: 1}", "!!binary x", "[1, 2]", "", "=", "\x00", "é"])).map("=".join)),
    max_size=5))
def test_fuzz_config_overrides(overrides):
    from chatapp.config import load_config

    try:
        cfg = load_config(overrides=overrides)
    except CTScribeError:
        STATS["overrides:error"] += 1
        return
    _use(cfg)
    STATS["overrides:ok"] += 1


def test_config_extends_cycle_and_bad_extends_are_config_errors(tmp_path):
    import pytest

    from chatapp.config import load_config
    from vision.errors import ConfigError

    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: [1, 2]\n")
    with pytest.raises(ConfigError, match="extends"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "d.yaml")


FUZZ_TESTS = [test_fuzz_loaders_raw_bytes, test_fuzz_nifti_header_inside_gzip, test_fuzz_dicom_inside_zip,
              test_fuzz_loaders_arbitrary_bytes, test_fuzz_labeler, test_fuzz_router, test_fuzz_config_file,
              test_fuzz_config_overrides]
