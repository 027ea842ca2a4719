"""A reusable corpus of malformed CT inputs, each with the typed error and message words it must produce.

Used by ``tests/test_malformed.py`` (through ``vision.io.load_ct`` and the CLI) and meant for the hardening tests,
which push the same files through the app's HTTP upload (``Case.upload``: one file per case; folder cases are
zipped). Everything is generated in a temporary folder from synthetic arrays: no real data, nothing downloaded.

Also exports small DICOM writers (``write_dicom_slice``, ``write_dicom_series``) for positive tests.
"""

from __future__ import annotations

import io
import pickle
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vision.errors import (
    CorruptFileError,
    CTScribeError,
    GeometryError,
    InputNotFoundError,
    IntensityError,
    NotCTError,
    UnsafeArchiveError,
    UnsupportedFormatError,
)
from vision.io import IngestLimits

CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class Case:
    """One malformed input.

    Args:
        name: identifier (test id).
        path: what to pass to ``load_ct`` (a path, or a list of paths).
        error: the :class:`CTScribeError` subclass expected.
        words: lowercase substrings the message must contain (what is wrong / what to do).
        kwargs: extra ``load_ct`` keyword arguments (e.g. tighter ``limits``).
        upload: a single file to upload over HTTP for the same case (None: not expressible as one upload).
    """

    name: str
    path: Path | list[Path]
    error: type[CTScribeError]
    words: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    upload: Path | None = None


# ----------------------------------------------------------------------------------------------- writers
def ct_array(shape: Sequence[int] = (24, 20, 8), seed: int = 0) -> np.ndarray:
    """A small HU volume (X, Y, Z) int16: air around an ellipse of soft tissue with a fatty rim and a bone dot."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    r = (x / 0.8) ** 2 + (y / 0.7) ** 2
    sl = np.where(r < 1, 40, -1000).astype(np.int16)
    sl[(r > 0.75) & (r < 1)] = -100
    sl[(np.abs(x) < 0.1) & (np.abs(y + 0.5) < 0.1)] = 700
    vol = np.repeat(sl[:, :, None], shape[2], axis=2)
    noise = np.random.default_rng(seed).integers(-5, 6, size=vol.shape)
    return (vol + noise).astype(np.int16)


def write_dicom_slice(path: Path, pixels: np.ndarray, *, position: Sequence[float], spacing=(0.8, 0.8),
                      orientation=(1, 0, 0, 0, 1, 0), modality: str = "CT", series_uid: str = "1.2.826.0.1.1",
                      series_description: str = "Synthetic", instance: int = 1, slope: float = 1.0,
                      intercept: float = -1024.0, with_pixels: bool = True, patient: str = "Doe^Jane",
                      extra: dict[str, Any] | None = None) -> Path:
    """Write one uncompressed (explicit VR little endian) slice. ``pixels`` is (rows, columns) of stored values."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_SOP_CLASS if modality == "MR" else CT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.826.0.1.2"
    ds.SeriesDescription = series_description
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.PatientName = patient
    ds.PatientID = "ID-123456"
    ds.PatientBirthDate = "19500101"
    ds.PatientAge = "071Y"
    ds.PatientSex = "F"
    ds.InstitutionName = "General Hospital"
    ds.StudyDate = "20240101"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Scanner 3000"
    ds.KVP = 120
    ds.SliceThickness = 1.0
    ds.ConvolutionKernel = "B30f"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    signed = pixels.dtype.kind == "i"
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if with_pixels:
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16 if signed else np.uint16)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_dicom_series(folder: Path, hu: np.ndarray, *, spacing=(0.8, 0.8, 2.0), positions: Sequence[float] | None
                       = None, shuffle: bool = True, **kw: Any) -> list[Path]:
    """Write an (X, Y, Z) HU array as an axial LPS series (unsigned storage, intercept -1024), files shuffled.

    Voxel (i, j, k) → LPS (x0 + i*sx, y0 + j*sy, z_k): column index = X (to patient left), row index = Y.
    """
    folder.mkdir(parents=True, exist_ok=True)
    nz = hu.shape[2]
    zs = list(positions) if positions is not None else [k * spacing[2] for k in range(nz)]
    order = np.random.default_rng(1).permutation(nz) if shuffle else np.arange(nz)
    intercept = kw.pop("intercept", -1024.0)
    slope = kw.pop("slope", 1.0)
    paths = []
    for n, k in enumerate(order):
        stored = np.round((hu[:, :, k].T.astype(np.float64) - intercept) / slope).astype(np.uint16)
        paths.append(write_dicom_slice(folder / f"IM{n:04d}.dcm", stored, position=(-10.0, -20.0, zs[k]),
                                       spacing=(spacing[1], spacing[0]), instance=int(k) + 1, intercept=intercept,
                                       slope=slope, **kw))
    return paths


def write_nifti(path: Path, arr: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    import nibabel as nib

    aff = np.diag([*zooms[:3], 1.0]) if len(zooms) >= 3 else np.eye(4)
    nib.save(nib.Nifti1Image(arr, aff), str(path))
    return path


def _zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return target


# ----------------------------------------------------------------------------------------------- the corpus
def build_corpus(root: Path) -> list[Case]:
    """Write every malformed input under ``root`` and return the cases (>= 20)."""
    return [build_case(b, root) for b in BUILDERS]


def build_case(builder: Callable[[Path], Case], root: Path) -> Case:
    """Write one case under ``root/<builder name>`` and return it."""
    d = root / builder.__name__.strip("_")
    d.mkdir(parents=True, exist_ok=True)
    return builder(d)


def _missing_path(d: Path) -> Case:
    return Case("missing_path", d / "no_such_scan.nii.gz", InputNotFoundError, ("does not exist", "check the path"))


def _empty_folder(d: Path) -> Case:
    (d / "empty").mkdir(exist_ok=True)
    return Case("empty_folder", d / "empty", InputNotFoundError, ("empty", "dicom"))


def _empty_file(d: Path) -> Case:
    p = d / "scan.nii.gz"
    p.write_bytes(b"")
    return Case("empty_file", p, CorruptFileError, ("empty", "0 bytes"), upload=p)


def _folder_without_dicom(d: Path) -> Case:
    f = d / "notes"
    f.mkdir(exist_ok=True)
    (f / "README.txt").write_text("not an image\n")
    (f / "list.csv").write_text("a,b\n1,2\n")
    return Case("folder_without_dicom", f, InputNotFoundError, ("no dicom files",),
                upload=_zip_folder(f, d / "notes.zip"))


def _mr_series(d: Path) -> Case:
    f = d / "mr"
    px = np.full((16, 16), 300, np.uint16)
    for k in range(4):
        write_dicom_slice(f / f"mr{k}.dcm", px, position=(0, 0, 2.0 * k),
                          modality="MR", instance=k + 1, intercept=0.0)
    return Case("mr_modality", f, NotCTError, ("no ct series", "mr"), upload=_zip_folder(f, d / "mr.zip"))


def _single_dicom(d: Path) -> Case:
    p = write_dicom_slice(d / "one.dcm", np.full((16, 16), 1000, np.uint16), position=(0, 0, 0))
    return Case("single_dicom_slice", p, GeometryError, ("single 2d image", "whole series"), upload=p)


def _nifti_2d(d: Path) -> Case:
    p = write_nifti(d / "slice.nii.gz", ct_array((32, 32, 1))[:, :, 0])
    return Case("nifti_2d", p, GeometryError, ("2d image", "3d volume"), upload=p)


def _nifti_one_slice(d: Path) -> Case:
    p = write_nifti(d / "one_slice.nii.gz", ct_array((32, 32, 1)))
    return Case("nifti_single_slice", p, GeometryError, ("2d image",), upload=p)


def _nifti_4d(d: Path) -> Case:
    a = np.stack([ct_array((16, 16, 8))] * 3, axis=-1)
    p = write_nifti(d / "series4d.nii.gz", a)
    return Case("nifti_4d", p, GeometryError, ("4d", "single volume"), upload=p)


def _uneven_spacing(d: Path) -> Case:
    f = d / "uneven"
    write_dicom_series(f, ct_array((16, 16, 6)), positions=[0.0, 1.0, 2.0, 3.7, 4.2, 6.5])
    return Case("uneven_spacing", f, GeometryError, ("inconsistent slice spacing", "resample"),
                upload=_zip_folder(f, d / "uneven.zip"))


def _missing_slices(d: Path) -> Case:
    f = d / "gaps"
    write_dicom_series(f, ct_array((16, 16, 6)), positions=[0.0, 2.0, 4.0, 8.0, 10.0, 12.0])
    return Case("missing_slices", f, GeometryError, ("missing", "complete series"),
                upload=_zip_folder(f, d / "gaps.zip"))


def _truncated_gzip(d: Path) -> Case:
    full = write_nifti(d / "full.nii.gz", ct_array((48, 48, 24)))
    data = full.read_bytes()
    p = d / "truncated.nii.gz"
    p.write_bytes(data[: len(data) // 2])
    full.unlink()
    return Case("truncated_gzip", p, CorruptFileError, ("truncated or damaged", "re-"), upload=p)


def _corrupt_dicom_header(d: Path) -> Case:
    p = d / "garbage.dcm"
    rng = np.random.default_rng(3)
    p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + rng.bytes(200))
    return Case("corrupt_dicom", p, CorruptFileError, ("damaged", "re-export"), upload=p)


def _truncated_dicom_pixels(d: Path) -> Case:
    f = d / "trunc"
    paths = write_dicom_series(f, ct_array((32, 32, 4)), shuffle=False)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-700])
    return Case("truncated_dicom_pixels", f, CorruptFileError, ("damaged", "re-export"),
                upload=_zip_folder(f, d / "trunc.zip"))


def _mixed_matrix(d: Path) -> Case:
    f = d / "mixed"
    write_dicom_series(f, ct_array((16, 16, 3)), shuffle=False)
    big = ct_array((24, 24, 3))
    for k in range(3):
        write_dicom_slice(f / f"big{k}.dcm", (big[:, :, k].T + 1024).astype(np.uint16), position=(-10, -20, 6.0 + 2 * k))
    return Case("mixed_matrix_sizes", f, GeometryError, ("mixed matrix sizes", "remove"),
                upload=_zip_folder(f, d / "mixed.zip"))


def _dicom_without_pixels(d: Path) -> Case:
    f = d / "nopix"
    for k in range(3):
        write_dicom_slice(f / f"s{k}.dcm", np.zeros((8, 8), np.uint16),
                          position=(0, 0, k), with_pixels=False)
    return Case("dicom_without_pixel_data", f, CorruptFileError, ("no pixel data",),
                upload=_zip_folder(f, d / "nopix.zip"))


def _zip_slip(d: Path) -> Case:
    p = d / "slip.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("series/IM0001.dcm", b"x" * 10)
        zf.writestr("../../evil.dcm", b"owned")
    return Case("zip_slip", p, UnsafeArchiveError, ("escapes", "relative paths"), upload=p)


def _zip_absolute(d: Path) -> Case:
    p = d / "absolute.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("/tmp/ctscribe-evil.dcm", b"owned")
    return Case("zip_absolute_path", p, UnsafeArchiveError, ("escapes",), upload=p)


def _zip_symlink(d: Path) -> Case:
    p = d / "link.zip"
    with zipfile.ZipFile(p, "w") as zf:
        info = zipfile.ZipInfo("series/passwd.dcm")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        info.create_system = 3
        zf.writestr(info, "/etc/passwd")
    return Case("zip_symlink", p, UnsafeArchiveError, ("symbolic link",), upload=p)


def _zip_bomb_ratio(d: Path) -> Case:
    p = d / "bomb.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("IM0001.dcm", b"\0" * (16 << 20))  # 16 MB → ~16 KB: ratio ~1000
    return Case("zip_bomb_ratio", p, UnsafeArchiveError, ("zip bomb",), upload=p)


def _zip_bomb_total(d: Path) -> Case:
    p = d / "big.zip"
    rng = np.random.default_rng(5)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        for i in range(3):
            zf.writestr(f"IM{i:04d}.dcm", rng.bytes(1 << 20))
    return Case("zip_total_size", p, UnsafeArchiveError, ("expands to more than", "zip_max_total_mb"),
                kwargs={"limits": IngestLimits(zip_max_total_mb=2)}, upload=None)


def _absurd_dims(d: Path) -> Case:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_zooms((1.0, 1.0, 1.0))
    buf = io.BytesIO()
    hdr.write_to(buf)
    p = d / "huge.nii"
    p.write_bytes(buf.getvalue() + b"\0" * 4 + b"\0" * 4096)
    return Case("absurd_dimensions", p, GeometryError, ("beyond the limits", "crop"), upload=p)


def _nan_inf(d: Path) -> Case:
    a = ct_array((16, 16, 8)).astype(np.float32)
    a[3, 3, 3] = np.nan
    a[4, 4, 4] = np.inf
    p = write_nifti(d / "nan.nii.gz", a)
    return Case("nan_inf", p, IntensityError, ("nan/inf", "re-export"), upload=p)


def _npy_without_spacing(d: Path) -> Case:
    p = d / "vol.npy"
    np.save(p, ct_array((16, 16, 8)))
    return Case("npy_without_spacing", p, GeometryError, ("without voxel spacing", "--spacing"), upload=p)


_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00"
        b"\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")


def _png_renamed(d: Path) -> Case:
    p = d / "scan.nii"
    p.write_bytes(_PNG)
    return Case("png_renamed_nii", p, UnsupportedFormatError, ("png picture", "nifti"), upload=p)


def _pickle_npy(d: Path) -> Case:
    p = d / "evil.npy"
    p.write_bytes(pickle.dumps({"array": [1, 2, 3]}))
    return Case("pickle_as_npy", p, UnsupportedFormatError, ("pickle", "never loaded"), upload=p)


def _object_npy(d: Path) -> Case:
    p = d / "objects.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return Case("object_npy", p, UnsupportedFormatError, ("python objects", "allow_pickle=false"),
                kwargs={"spacing": (1.0, 1.0, 1.0)}, upload=p)


def _normalised(d: Path) -> Case:
    a = (ct_array((16, 16, 8)).astype(np.float32) + 1000) / 2000
    p = write_nifti(d / "normalised.nii.gz", np.clip(a, 0, 1))
    return Case("normalised_values", p, IntensityError, ("normalised", "hounsfield"), upload=p)


def _eight_bit(d: Path) -> Case:
    a = np.random.default_rng(2).integers(0, 256, (16, 16, 8)).astype(np.uint8)
    p = write_nifti(d / "eightbit.nii.gz", a)
    return Case("eight_bit_picture", p, IntensityError, ("8-bit", "hounsfield"), upload=p)


def _mr_like_nifti(d: Path) -> Case:
    a = np.random.default_rng(4).integers(0, 3000, (24, 24, 8)).astype(np.int16)
    p = write_nifti(d / "t1.nii.gz", a)
    return Case("mr_like_nifti", p, NotCTError, ("does not look like a ct", "hounsfield"), upload=p)


def _text_renamed(d: Path) -> Case:
    p = d / "notes.nii"
    p.write_text("patient notes, definitely not a volume\n" * 20)
    return Case("text_renamed_nii", p, UnsupportedFormatError, ("not a format", "nifti"), upload=p)


def _zero_spacing(d: Path) -> Case:
    import nibabel as nib

    img = nib.Nifti1Image(ct_array((16, 16, 8)), np.eye(4))
    img.header.set_qform(None, code=0)
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=2)  # a header whose z axis has zero length
    p = d / "flat.nii.gz"
    nib.save(nib.Nifti1Image(img.dataobj, None, img.header), str(p))
    return Case("zero_spacing", p, GeometryError, ("degenerate",), upload=p)


def _empty_zip(d: Path) -> Case:
    p = d / "empty.zip"
    with zipfile.ZipFile(p, "w"):
        pass
    return Case("empty_zip", p, InputNotFoundError, ("zip file", "empty"), upload=p)


def _corrupt_zip(d: Path) -> Case:
    good = d / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IM0001.dcm", np.random.default_rng(6).bytes(5000) + b"\0" * 50000)
    data = bytearray(good.read_bytes())
    data[60:90] = b"\xff" * 30  # damage the deflate stream (CRC/zlib failure on extraction)
    p = d / "damaged.zip"
    p.write_bytes(bytes(data))
    good.unlink()
    return Case("corrupt_zip", p, CorruptFileError, ("damaged", "re-create"), upload=p)




BUILDERS: list[Callable[[Path], Case]] = [
    _missing_path, _empty_folder, _empty_file, _folder_without_dicom, _mr_series, _single_dicom, _nifti_2d,
    _nifti_one_slice, _nifti_4d, _uneven_spacing, _missing_slices, _truncated_gzip, _corrupt_dicom_header,
    _truncated_dicom_pixels, _mixed_matrix, _dicom_without_pixels, _zip_slip, _zip_absolute, _zip_symlink,
    _zip_bomb_ratio, _zip_bomb_total, _absurd_dims, _nan_inf, _npy_without_spacing, _png_renamed,
    _pickle_npy, _object_npy, _normalised, _eight_bit, _mr_like_nifti, _text_renamed, _zero_spacing,
    _empty_zip, _corrupt_zip,
]
