"""More malformed inputs on top of ``tests/malformed_corpus.py`` (34 cases): together they make the >= 50-case
hardening corpus that goes through the Python API, the CLI and the app's HTTP API.

Same shape as the base corpus: each builder writes its file(s) under a folder and returns a
:class:`malformed_corpus.Case` (typed error + lowercase words the message must hold). Synthetic arrays only.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from malformed_corpus import BUILDERS, Case, ct_array, write_dicom_series, write_dicom_slice, write_nifti

from vision.errors import (
    CorruptFileError,
    GeometryError,
    InputNotFoundError,
    IntensityError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from vision.io import IngestLimits


def _nifti1_header_only(p: Path, shape: tuple[int, ...], extra: bytes = b"") -> Path:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape(shape)
    hdr.set_zooms((1.0,) * len(shape))
    buf = io.BytesIO()
    hdr.write_to(buf)
    p.write_bytes(buf.getvalue() + b"\0" * 4 + extra)
    return p


def _zip(p: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return p


def _line_npy(d: Path) -> Case:  # the 1x1x100000
    p = d / "line.npy"
    np.save(p, np.zeros((1, 1, 100000), np.int16))
    return Case("dims_1x1x100000", p, GeometryError, ("2d image", "whole series"),
                kwargs={"spacing": (1.0, 1.0, 1.0)}, upload=None)


def _line_nrrd(d: Path) -> Case:
    import nrrd

    p = d / "line.nrrd"
    nrrd.write(str(p), np.zeros((1, 1, 100000), np.int16), {"spacings": [1.0, 1.0, 1.0]})
    return Case("nrrd_1x1x100000", p, GeometryError, ("2d image",), upload=p)


def _long_header(d: Path) -> Case:
    p = _nifti1_header_only(d / "long.nii", (4, 4, 32767))
    return Case("dims_4x4x32767_header_only", p, GeometryError, ("beyond the limits",), upload=p)


def _zero_dim(d: Path) -> Case:
    p = _nifti1_header_only(d / "zero.nii", (0, 64, 64))
    return Case("zero_size_dimension", p, GeometryError, ("2d image",), upload=p)


def _non_ascii_truncated(d: Path) -> Case:
    full = write_nifti(d / "full.nii.gz", ct_array((40, 40, 20)))
    p = d / "Grüße_患者_scan ü.nii.gz"
    p.write_bytes(full.read_bytes()[:900])
    full.unlink()
    return Case("non_ascii_name_truncated", p, CorruptFileError, ("truncated or damaged",), upload=p)


def _non_ascii_png(d: Path) -> Case:
    from malformed_corpus import _PNG

    p = d / "снимок_КТ.nii"
    p.write_bytes(_PNG)
    return Case("non_ascii_name_png", p, UnsupportedFormatError, ("png picture",), upload=p)


def _over_limit(d: Path) -> Case:
    p = write_nifti(d / "big.nii", np.zeros((64, 64, 160), np.int16) - 1000)  # 1.3 MB
    return Case("over_size_limit", p, UnsupportedFormatError, ("over the", "limit"),
                kwargs={"limits": IngestLimits(max_file_mb=1)}, upload=None)


def _random_bytes(d: Path) -> Case:
    p = d / "scan.nii.gz"
    p.write_bytes(b"\x00\x01" + np.random.default_rng(7).bytes(4000))
    return Case("wrong_magic_random", p, UnsupportedFormatError, ("not a format",), upload=p)


def _gzip_text(d: Path) -> Case:
    p = d / "notes.nii.gz"
    p.write_bytes(gzip.compress(b"just some text, not a volume\n" * 40))
    return Case("gzip_of_text", p, UnsupportedFormatError, ("gzip-compressed", "no nifti"), upload=p)


def _gzip_garbage(d: Path) -> Case:
    p = d / "broken.nii.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
    return Case("gzip_corrupt_header", p, CorruptFileError, ("damaged gzip",), upload=p)


def _jpeg_dcm(d: Path) -> Case:
    p = d / "IM0001.dcm"
    p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\0" * 300)
    return Case("jpeg_renamed_dcm", p, UnsupportedFormatError, ("jpeg picture",), upload=p)


def _pdf_nii(d: Path) -> Case:
    p = d / "report.nii.gz"
    p.write_bytes(b"%PDF-1.7\n" + b"x" * 500)
    return Case("pdf_renamed_nii_gz", p, UnsupportedFormatError, ("pdf document",), upload=p)


def _nrrd_bad_header(d: Path) -> Case:
    p = d / "bad.nrrd"
    p.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: a b c\nencoding: raw\n\n")
    return Case("nrrd_damaged_header", p, CorruptFileError, ("damaged nrrd header",), upload=p)


def _nrrd_truncated(d: Path) -> Case:
    import nrrd

    full = d / "full.nrrd"
    nrrd.write(str(full), ct_array((32, 32, 16)), {"spacings": [1.0, 1.0, 1.0]})
    data = full.read_bytes()
    p = d / "truncated.nrrd"
    p.write_bytes(data[: len(data) // 2])
    full.unlink()
    return Case("nrrd_truncated_data", p, CorruptFileError, ("truncated or damaged",), upload=p)


def _nrrd_4d(d: Path) -> Case:
    import nrrd

    p = d / "fourd.nrrd"
    nrrd.write(str(p), np.zeros((4, 8, 8, 8), np.int16))
    return Case("nrrd_4d", p, GeometryError, ("4d",), upload=p)


def _npz_no_spacing(d: Path) -> Case:
    p = d / "vol.npz"
    np.savez(p, ct=ct_array())
    return Case("npz_without_spacing", p, GeometryError, ("without voxel spacing",), upload=p)


def _npz_objects(d: Path) -> Case:
    p = d / "objects.npz"
    np.savez(p, ct=np.array([{"a": 1}], dtype=object))
    return Case("npz_object_array", p, UnsupportedFormatError, ("no pickles",), kwargs={"spacing": (1.0, 1.0, 1.0)},
                upload=None)


def _npy_truncated(d: Path) -> Case:
    full = d / "full.npy"
    np.save(full, ct_array((32, 32, 16)))
    p = d / "truncated.npy"
    p.write_bytes(full.read_bytes()[:300])
    full.unlink()
    return Case("npy_truncated", p, CorruptFileError, ("truncated or damaged",), kwargs={"spacing": (1.0, 1.0, 1.0)},
                upload=None)


def _zip_in_zip(d: Path) -> Case:
    inner = _zip(d / "inner.zip", {"IM0001.dcm": b"x" * 50})
    p = d / "outer.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.write(inner, "inner.zip")
    inner.unlink()
    return Case("zip_inside_zip", p, InputNotFoundError, ("no dicom files",), upload=p)


def _zip_backslash(d: Path) -> Case:
    p = _zip(d / "win.zip", {"series\\IM0001.dcm": b"x", "..\\..\\evil.dcm": b"owned"})
    return Case("zip_slip_backslash", p, UnsafeArchiveError, ("escapes",), upload=p)


def _zip_drive(d: Path) -> Case:
    p = _zip(d / "drive.zip", {"C:/Windows/evil.dcm": b"owned"})
    return Case("zip_drive_letter", p, UnsafeArchiveError, ("escapes",), upload=p)


def _zip_encrypted(d: Path) -> Case:
    p = _zip(d / "locked.zip", {"IM0001.dcm": b"x" * 100})
    data = bytearray(p.read_bytes())
    data[6] |= 1  # general purpose flag bit 0 (encrypted), local header and central directory
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 8] |= 1
    p.write_bytes(bytes(data))
    return Case("zip_encrypted", p, UnsupportedFormatError, ("encrypted", "unzip"), upload=p)


def _zip_4d_nifti(d: Path) -> Case:
    nii = write_nifti(d / "q.nii.gz", np.zeros((8, 8, 8, 2), np.int16))
    p = d / "fourd.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.write(nii, "q.nii.gz")
    nii.unlink()
    return Case("zip_with_4d_nifti", p, GeometryError, ("4d",), upload=p)


def _zip_too_many_files(d: Path) -> Case:
    p = _zip(d / "many.zip", {f"IM{i:05d}.dcm": b"" for i in range(60)})
    return Case("zip_too_many_files", p, GeometryError, ("more than", "max_files"),
                kwargs={"limits": IngestLimits(max_files=50)}, upload=None)


def _two_slices(d: Path) -> Case:
    f = d / "two"
    write_dicom_series(f, ct_array((16, 16, 2)))
    return Case("dicom_two_slices", f, GeometryError, ("2d image",), upload=_folder_zip(f, d / "two.zip"))


def _mixed_orientation(d: Path) -> Case:
    f = d / "orient"
    a = ct_array((16, 16, 3))
    write_dicom_series(f, a, shuffle=False)
    for k in range(3):  # the same series UID, coronal slices mixed in
        write_dicom_slice(f / f"cor{k}.dcm", (a[:, :, k].T + 1024).astype(np.uint16), position=(0, 0, 10 + 2 * k),
                          orientation=(1, 0, 0, 0, 0, -1), instance=10 + k)
    return Case("mixed_series_orientations", f, GeometryError, ("different orientations",),
                upload=_folder_zip(f, d / "orient.zip"))


def _complex(d: Path) -> Case:
    p = write_nifti(d / "complex.nii.gz", ct_array().astype(np.complex64))
    return Case("complex_voxels", p, UnsupportedFormatError, ("complex64", "real-valued"), upload=p)


def _huge_values(d: Path) -> Case:
    p = write_nifti(d / "huge.nii.gz", ct_array().astype(np.int32) * 100000)
    return Case("values_far_outside_hu", p, IntensityError, ("outside hounsfield", "rescale"), upload=p)


def _thick_spacing(d: Path) -> Case:
    import nibabel as nib

    p = d / "thick.nii.gz"
    nib.save(nib.Nifti1Image(ct_array(), np.diag([1.0, 1.0, 100.0, 1.0])), str(p))
    return Case("spacing_100mm", p, GeometryError, ("not plausible", "spacing"), upload=p)


def _truncated_plain_nii(d: Path) -> Case:
    full = write_nifti(d / "full.nii", ct_array((32, 32, 16)))
    p = d / "cut.nii"
    p.write_bytes(full.read_bytes()[:16000])
    full.unlink()
    return Case("truncated_uncompressed_nifti", p, CorruptFileError, ("truncated or damaged",), upload=p)


def _folder_zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return target


EXTRA_BUILDERS: list[Callable[[Path], Case]] = [
    _line_npy, _line_nrrd, _long_header, _zero_dim, _non_ascii_truncated, _non_ascii_png, _over_limit, _random_bytes,
    _gzip_text, _gzip_garbage, _jpeg_dcm, _pdf_nii, _nrrd_bad_header, _nrrd_truncated, _nrrd_4d, _npz_no_spacing,
    _npz_objects, _npy_truncated, _zip_in_zip, _zip_backslash, _zip_drive, _zip_encrypted, _zip_4d_nifti,
    _zip_too_many_files, _two_slices, _mixed_orientation, _complex, _huge_values, _thick_spacing,
    _truncated_plain_nii,
]

ALL_BUILDERS: list[Callable[[Path], Case]] = [*BUILDERS, *EXTRA_BUILDERS]
