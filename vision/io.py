"""Load any CT the user has into a trustworthy :class:`~vision.volume.CTVolume` (HU, canonical RAS, mm).

Formats are recognised by their bytes, not their names: NIfTI-1/2 (.nii, .nii.gz), NRRD, DICOM (a folder, a .zip,
a list of files, or one file), NumPy .npy/.npz (only with an explicit spacing). Every check raises a
:class:`~vision.errors.CTScribeError` subclass whose message says what is wrong and what to do.

Speed: NIfTI voxels are read once in their stored integer type (int16 stays int16, no float conversion), headers
are checked against :class:`IngestLimits` *before* any voxel is read, and the only extra copy is the flip/transpose
into RAS order when the file is stored otherwise (most DICOM-derived files are LPS).
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision.errors import (
    ConfigError,
    CorruptFileError,
    CTScribeError,
    GeometryError,
    InputNotFoundError,
    UnsupportedFormatError,
)
from vision.hu import check_hu
from vision.volume import CTVolume

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass(frozen=True)
class IngestLimits:
    """Resource limits for untrusted inputs (uploads go through the same loader).

    Defaults follow ``configs/default.yaml`` (``vision:`` section); build from config with :meth:`from_config`.
    """

    max_file_mb: float = 1024.0  # largest single input file / zip; a chest CT is 50-500 MB uncompressed
    zip_max_ratio: float = 200.0  # per-entry expansion limit; DICOM deflates ~3-10x, bombs 1000x+
    zip_max_total_mb: float = 4096.0  # total uncompressed size of a zip
    max_voxels: int = 2**29  # 512x512x2048; int16 → 1 GiB, beyond that nothing downstream fits in memory
    max_dim: int = 4096  # largest size along one axis; headers claiming more are damaged or hostile
    min_dim: int = 3  # fewer voxels along an axis is a 2D image (or a stack of two), not a volume
    max_files: int = 20000  # files in a DICOM folder/zip
    max_spacing_mm: float = 50.0  # voxel sizes beyond this (or <= 0.01 mm) are header errors

    @classmethod
    def from_config(cls, config: Any = None) -> IngestLimits:
        """From a :class:`chatapp.config.Config`, its ``vision`` section (a mapping), or ``None`` (defaults)."""
        if config is None:
            return cls()
        sec: Mapping[str, Any] = config.section("vision") if hasattr(config, "section") else config
        kw: dict[str, Any] = {}
        for key, name in (("max_upload_mb", "max_file_mb"), ("max_file_mb", "max_file_mb"),
                          ("zip_max_ratio", "zip_max_ratio"), ("zip_max_total_mb", "zip_max_total_mb"),
                          ("max_voxels", "max_voxels"), ("max_dim", "max_dim"), ("max_files", "max_files")):
            if sec.get(key) is not None:
                try:
                    kw[name] = type(getattr(cls(), name))(sec[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"vision.{key} must be a number, got {sec[key]!r}") from None
        return cls(**kw)


# ----------------------------------------------------------------------------------------------------- public API
def load_ct(path: PathLike | Sequence[PathLike], *, spacing: tuple[float, float, float] | None = None,
            keep_age_sex: bool = False, limits: IngestLimits | None = None) -> CTVolume:
    """Load a CT volume in Hounsfield units, canonical RAS voxel order.

    Args:
        path: a NIfTI (.nii/.nii.gz), NRRD, DICOM file, DICOM folder, .zip of a DICOM series (or of one NIfTI),
            .npy/.npz file, or a list of DICOM files.
        spacing: voxel size (X, Y, Z) in mm. Required for .npy (assumed already in RAS voxel order); for other
            formats it overrides the header's spacing (with a warning).
        keep_age_sex: keep DICOM PatientAge/PatientSex in ``metadata`` (config ``privacy.keep_age_sex``).
        limits: resource limits for untrusted input (default :class:`IngestLimits`).

    Returns:
        :class:`CTVolume` with ``array`` (X, Y, Z) int16 or float32 HU, ``spacing`` mm, RAS+ ``affine``, PHI-free
        ``metadata``, ``source`` (format, series chosen and why, slice count) and ``warnings``.

    Raises:
        CTScribeError: a subclass naming the problem (missing path, not CT, 2D/4D, uneven slices, corrupt file,
            unsafe zip, absurd dimensions, NaN/inf, npy without spacing, ...).
    """
    limits = limits or IngestLimits()
    if spacing is not None:
        spacing = _check_spacing(spacing, "--spacing")
    if isinstance(path, (list, tuple)):
        files = [Path(p) for p in path]
        if not files:
            raise InputNotFoundError("empty list of files; pass DICOM files, a folder or a volume file.")
        for f in files:
            if not f.is_file():
                raise InputNotFoundError(f"{f} does not exist or is not a file; check the path.")
        return _dicom(files, spacing, keep_age_sex, limits, "the DICOM files")
    return _load_path(Path(path), spacing, keep_age_sex, limits, allow_zip=True)


# ------------------------------------------------------------------------------------------------------- dispatch
def _load_path(p: Path, spacing, keep_age_sex: bool, limits: IngestLimits, *, allow_zip: bool) -> CTVolume:
    if not p.exists():
        raise InputNotFoundError(f"{p} does not exist; check the path (a NIfTI/NRRD file, a DICOM folder or zip).")
    if p.is_dir():
        files = _list_files(p, limits)
        if not files:
            raise InputNotFoundError(f"the folder {p} is empty; pass the folder that holds the DICOM slices.")
        vols = [f for f in files if _kind_from_name(f) in ("nifti", "nrrd")]
        try:
            return _dicom(files, spacing, keep_age_sex, limits, f"the folder {p.name!r}")
        except InputNotFoundError:
            if len(vols) == 1:
                return _load_path(vols[0], spacing, keep_age_sex, limits, allow_zip=False)
            if vols:
                raise InputNotFoundError(f"the folder {p.name!r} holds {len(vols)} volume files and no DICOM series; "
                                         "pass one of the files.") from None
            raise
    size = p.stat().st_size
    if size == 0:
        raise CorruptFileError(f"{p.name} is empty (0 bytes); the upload or copy failed, try again.")
    if size > limits.max_file_mb * 2**20:
        raise UnsupportedFormatError(f"{p.name} is {size / 2**20:.0f} MB, over the {limits.max_file_mb:.0f} MB limit "
                                     "(vision.max_upload_mb); crop the scan or raise the limit.")
    kind = sniff(p)
    if kind == "nifti":
        vol = _nifti(p, limits)
    elif kind == "nrrd":
        vol = _nrrd(p, limits)
    elif kind == "npy":
        vol = _npy(p, spacing, limits)
    elif kind == "npz":
        vol = _npz(p, spacing, limits)
    elif kind == "dicom":
        return _dicom([p], spacing, keep_age_sex, limits, p.name)
    elif kind == "zip":
        if not allow_zip:
            raise UnsupportedFormatError(f"{p.name}: zip files inside zip files are not read; unzip the outer one.")
        return _zip(p, spacing, keep_age_sex, limits)
    else:  # pragma: no cover - sniff raises for everything else
        raise UnsupportedFormatError(f"{p.name}: unsupported format")
    return _finish(vol, spacing, limits, what=p.name)


_NAME_KINDS = ((".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd"), (".nhdr", "nrrd"), (".npy", "npy"),
               (".npz", "npz"), (".zip", "zip"), (".dcm", "dicom"))


def _kind_from_name(p: Path) -> str | None:
    n = p.name.lower()
    return next((k for suffix, k in _NAME_KINDS if n.endswith(suffix)), None)


def sniff(p: Path) -> str:
    """Recognise the format from the file's first bytes: nifti | nrrd | dicom | zip | npz | npy.

    Raises:
        UnsupportedFormatError: pictures, pickles, anything else.
        CorruptFileError: a gzip stream that cannot even yield a header.
    """
    with open(p, "rb") as f:
        head = f.read(544)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(p, "rb") as g:
                head = g.read(544)
        except (EOFError, OSError, zlib.error) as e:
            raise CorruptFileError(f"{p.name} is a damaged gzip file ({e}); re-copy or re-export it.") from None
        if _is_nifti(head):
            return "nifti"
        if head[:4] == b"NRRD":
            return "nrrd"
        raise UnsupportedFormatError(f"{p.name} is gzip-compressed but holds no NIfTI/NRRD volume; pass a .nii.gz, "
                                     "NRRD, DICOM folder or zip.")
    if _is_nifti(head):
        return "nifti"
    if head[:4] == b"NRRD":
        return "nrrd"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz" if p.name.lower().endswith(".npz") else "zip"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    pictures = {b"\x89PNG": "a PNG picture", b"\xff\xd8\xff": "a JPEG picture", b"GIF8": "a GIF picture",
                b"II*\x00": "a TIFF picture", b"MM\x00*": "a TIFF picture", b"%PDF": "a PDF document"}
    for magic, what in pictures.items():
        if head.startswith(magic):
            raise UnsupportedFormatError(f"{p.name} is {what}, not a CT volume (whatever its name says); pass the "
                                         "scan as NIfTI, NRRD or DICOM.")
    if head[:1] == b"\x80" and p.suffix.lower() in (".pkl", ".pickle", ".pt", ".pth", ".npy", ".npz", ""):
        raise UnsupportedFormatError(f"{p.name} looks like a Python pickle; pickles are never loaded (they can run "
                                     "code). Save the array with numpy.save(..., allow_pickle=False) or as NIfTI.")
    if _kind_from_name(p) == "dicom":
        return "dicom"  # DICOM without the 128-byte preamble: pydicom decides
    raise UnsupportedFormatError(f"{p.name} is not a format ctscribe reads; pass NIfTI (.nii/.nii.gz), NRRD, a DICOM "
                                 "folder/zip/files, or .npy/.npz with --spacing.")


def _is_nifti(head: bytes) -> bool:
    if len(head) < 348:
        return False
    size_le = int.from_bytes(head[:4], "little")
    size_be = int.from_bytes(head[:4], "big")
    if 348 in (size_le, size_be):
        return head[344:347] in (b"n+1", b"ni1")
    if 540 in (size_le, size_be):
        return head[4:7] in (b"n+2", b"ni2")
    return False


def _list_files(folder: Path, limits: IngestLimits) -> list[Path]:
    out: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith(".") or n.upper() == "DICOMDIR":
                continue
            out.append(Path(root) / n)
            if len(out) > limits.max_files:
                raise GeometryError(f"the folder {folder.name!r} holds more than {limits.max_files} files "
                                    "(vision.max_files); pass the folder of one series.")
    return out


# ---------------------------------------------------------------------------------------------------- the formats
@dataclass
class _Raw:
    """A volume in stored voxel order, before checks and reorientation."""

    array: np.ndarray
    affine: np.ndarray
    fmt: str
    metadata: dict[str, Any]
    source: dict[str, Any]
    warnings: list[str]


def _check_shape(shape: Sequence[int], limits: IngestLimits, what: str) -> tuple[int, ...]:
    """Reject 2D/4D/absurd shapes from the header, before any voxel is read. Returns the 3D shape."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise GeometryError(f"{what} is {len(shape)}D with shape {shape} (e.g. a time series or several volumes); "
                            "ctscribe needs one 3D CT. Extract a single volume (e.g. fslroi / nibabel slicing).")
    if len(shape) < 3 or min(shape) < limits.min_dim:
        raise GeometryError(f"{what} has shape {shape}: a 2D image, not a 3D volume (each axis needs at least "
                            f"{limits.min_dim} voxels). Pass the whole series.")
    if max(shape) > limits.max_dim or int(np.prod(shape, dtype=np.int64)) > limits.max_voxels:
        raise GeometryError(f"{what} claims shape {shape}, beyond the limits ({limits.max_dim} per axis, "
                            f"{limits.max_voxels} voxels); the header is damaged, or crop/downsample the scan first.")
    return shape


def _nifti(p: Path, limits: IngestLimits) -> _Raw:
    import nibabel as nib

    try:
        img = nib.load(p)
    except Exception as e:  # noqa: BLE001 - nibabel raises many types for damaged headers
        raise CorruptFileError(f"{p.name} has a damaged NIfTI header ({type(e).__name__}: {e}); re-export it.") from None
    shape = _check_shape(img.shape, limits, p.name)
    warnings: list[str] = []
    hdr = img.header
    if int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 0:
        warnings.append("NIfTI header has no qform/sform orientation; using the pixdim fallback (orientation may be "
                        "wrong)")
    dataobj = img.dataobj
    slope, inter = float(dataobj.slope), float(dataobj.inter)
    try:
        if p.name.lower().endswith(".gz"):
            raw = _read_gz_voxels(p, dataobj.dtype, int(dataobj.offset), img.shape)
        else:
            raw = np.asanyarray(dataobj.get_unscaled())
    except (EOFError, OSError, zlib.error, ValueError, OverflowError) as e:  # OverflowError: absurd vox_offset
        raise CorruptFileError(f"{p.name} is truncated or damaged ({type(e).__name__}: {e}); re-copy or re-export "
                               "the file.") from None
    raw = raw.reshape(shape, order="F")
    if raw.dtype.kind in "iu" and slope == 1.0 and float(inter).is_integer():
        arr = _to_int16(raw, int(inter))
    elif raw.dtype.kind in "iuf":
        arr = raw.astype(np.float32, copy=False)
        if slope != 1.0 or inter != 0.0:
            arr = arr * np.float32(slope) + np.float32(inter)
    else:
        raise UnsupportedFormatError(f"{p.name} stores voxels as {raw.dtype}; a CT needs real-valued voxels.")
    src = {"format": "nifti", "stored_dtype": str(raw.dtype)}
    return _Raw(arr, np.asarray(img.affine, dtype=np.float64), "nifti", {}, src, warnings)


def _read_gz_voxels(p: Path, dtype: np.dtype, offset: int, shape: Sequence[int]) -> np.ndarray:
    """Voxels of a .nii.gz in one zlib pass (about 2x faster than streaming through ``gzip``), bounded by the
    header's size so a gzip bomb cannot inflate past it. Returns a Fortran-ordered view on the buffer."""
    dtype = np.dtype(dtype)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    parts: list[bytes] = []
    got = 0
    data = p.read_bytes()
    while data and got < need:  # concatenated gzip members are legal
        d = zlib.decompressobj(wbits=31)
        parts.append(d.decompress(data, need - got))
        got += len(parts[-1])
        if not d.eof and got < need:
            raise EOFError(f"compressed data end after {got} of {need} bytes")
        data = d.unused_data
    buf = parts[0] if len(parts) == 1 else b"".join(parts)
    if len(buf) < need:
        raise EOFError(f"only {len(buf)} of {need} bytes after decompression")
    arr = np.ndarray(tuple(shape), dtype=dtype, buffer=buf, offset=offset, order="F")
    return arr.astype(dtype.newbyteorder("="), copy=False) if not dtype.isnative else arr


def _to_int16(raw: np.ndarray, inter: int = 0) -> np.ndarray:
    """Integer voxels (+ integer intercept) → int16 when the range fits (no copy for int16 without intercept)."""
    if raw.dtype == np.int16 and inter == 0:
        return raw
    lo, hi = int(raw.min()) + inter, int(raw.max()) + inter
    if -32768 <= lo and hi <= 32767:
        if inter == 0:
            return raw.astype(np.int16)
        out = raw.astype(np.int32)
        out += inter
        return out.astype(np.int16)
    return raw.astype(np.float32) + np.float32(inter)


def _nrrd(p: Path, limits: IngestLimits) -> _Raw:
    import nrrd

    try:
        header = nrrd.read_header(str(p))
    except Exception as e:  # noqa: BLE001 - readers raise many types; all mean 'damaged'
        raise CorruptFileError(f"{p.name} has a damaged NRRD header ({type(e).__name__}: {e}); re-export it.") from None
    sizes = [int(s) for s in header.get("sizes", [])]
    dirs = header.get("space directions")
    if dirs is not None:  # drop non-spatial axes (rows of NaN/None) such as a leading list/vector axis
        rows = [np.asarray(r, dtype=float) if r is not None else None for r in dirs]
        spatial = [i for i, r in enumerate(rows) if r is not None and np.all(np.isfinite(r))]
        if len(sizes) > len(spatial) and any(sizes[i] > 1 for i in range(len(sizes)) if i not in spatial):
            raise GeometryError(f"{p.name} has {len(sizes)} axes with sizes {sizes}; ctscribe needs one 3D CT.")
    _check_shape(sizes, limits, p.name)
    try:
        data, header = nrrd.read(str(p), index_order="F")
    except Exception as e:  # noqa: BLE001 - readers raise many types; all mean 'damaged'
        raise CorruptFileError(f"{p.name} is truncated or damaged ({type(e).__name__}: {e}); re-export it.") from None
    data = np.squeeze(data) if data.ndim > 3 else data
    shape = _check_shape(data.shape, limits, p.name)
    space = str(header.get("space", "right-anterior-superior")).lower()
    flip = {"left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1), "right-anterior-superior": (1, 1, 1),
            "ras": (1, 1, 1), "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1)}.get(space)
    warnings: list[str] = []
    if flip is None:
        flip = (1, 1, 1)
        warnings.append(f"NRRD space {space!r} not recognised; assuming RAS")
    affine = np.eye(4)
    if dirs is not None:
        rows = [np.asarray(r, dtype=float) for r in header["space directions"]
                if r is not None and np.all(np.isfinite(np.asarray(r, dtype=float)))]
        affine[:3, :3] = np.stack(rows[:3], axis=1)
    elif "spacings" in header:
        affine[:3, :3] = np.diag([float(s) for s in header["spacings"]][:3])
        warnings.append("NRRD has no space directions; assuming axis-aligned RAS")
    if "space origin" in header:
        affine[:3, 3] = np.asarray(header["space origin"], dtype=float)
    affine = np.diag(list(flip) + [1.0]) @ affine
    arr = _to_int16(data) if data.dtype.kind in "iu" else data.astype(np.float32, copy=False)
    return _Raw(arr.reshape(shape), affine, "nrrd", {}, {"format": "nrrd", "stored_dtype": str(data.dtype)}, warnings)


def _npy_array(arr: Any, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise UnsupportedFormatError(f"{what} does not hold a numeric array; save the HU volume with numpy.save.")
    return _to_int16(arr) if arr.dtype.kind in "iu" else arr.astype(np.float32, copy=False)


def _need_spacing(spacing, what: str) -> None:
    if spacing is None:
        raise GeometryError(f"{what} is a bare array without voxel spacing; give it explicitly, e.g. "
                            "`--spacing 0.7 0.7 1.5` (mm along X, Y, Z) or load_ct(..., spacing=(0.7, 0.7, 1.5)).")


def _npy(p: Path, spacing, limits: IngestLimits) -> _Raw:
    _need_spacing(spacing, p.name)
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)  # header only: checked before any data is read
    except Exception as e:  # noqa: BLE001 - readers raise many types; all mean 'damaged'
        raise CorruptFileError(f"{p.name} has a damaged .npy header ({e}); save it again with numpy.save.") from None
    if dtype.hasobject:
        raise UnsupportedFormatError(f"{p.name} holds Python objects (a pickle); only numeric arrays are loaded. "
                                     "Save the HU volume with numpy.save(..., allow_pickle=False).")
    _check_shape(shape, limits, p.name)
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise CorruptFileError(f"{p.name} is truncated or damaged ({e}); save it again.") from None
    arr = _npy_array(arr, p.name)
    return _Raw(arr, np.diag([*spacing, 1.0]), "npy", {}, {"format": "npy"},
                ["array assumed to be in RAS voxel order (X right, Y anterior, Z superior)"])


def _npz(p: Path, spacing, limits: IngestLimits) -> _Raw:
    import zipfile

    from vision.archive import check_zip

    try:
        with zipfile.ZipFile(p) as zf:
            check_zip(zf, max_total_mb=min(limits.zip_max_total_mb, limits.max_voxels * 8 / 2**20),
                      max_ratio=limits.zip_max_ratio, name=p.name)
        npz = np.load(p, allow_pickle=False)
    except (zipfile.BadZipFile, NotImplementedError, EOFError) as e:  # damaged, or an unknown zip version/method
        raise CorruptFileError(f"{p.name} is a damaged .npz ({e}); save it again.") from None
    with npz:
        keys = list(npz.files)
        if spacing is None and "spacing" in keys:
            try:
                stored = np.asarray(npz["spacing"], dtype=float).ravel().tolist()
            except (ValueError, TypeError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
                raise GeometryError(f"{p.name}['spacing'] cannot be read ({e}); store three numbers in mm or pass "
                                    "--spacing X Y Z.") from None
            spacing = _check_spacing(stored, f"{p.name}['spacing']")
        _need_spacing(spacing, p.name)
        candidates = [k for k in ("ct", "image", "volume", "hu", "arr_0") if k in keys] or \
                     [k for k in keys if k != "spacing"]
        if len(candidates) != 1 and not any(k in keys for k in ("ct", "image", "volume", "hu", "arr_0")):
            raise UnsupportedFormatError(f"{p.name} holds arrays {keys}; name the CT array 'ct' or 'image'.")
        try:
            arr = npz[candidates[0]]
        except ValueError as e:
            raise UnsupportedFormatError(f"{p.name}: {e}; only numeric arrays are loaded (no pickles).") from None
        except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as e:
            raise CorruptFileError(f"{p.name} is damaged ({e}); save it again.") from None
    _check_shape(arr.shape, limits, p.name)
    arr = _npy_array(arr, p.name)
    return _Raw(arr, np.diag([*spacing, 1.0]), "npz", {}, {"format": "npz", "array": candidates[0]},
                ["array assumed to be in RAS voxel order (X right, Y anterior, Z superior)"])


def _dicom(files: list[Path], spacing, keep_age_sex: bool, limits: IngestLimits, what: str) -> CTVolume:
    from vision.dicom import read_series

    if len(files) > limits.max_files:
        raise GeometryError(f"{what}: {len(files)} files is over the limit {limits.max_files} (vision.max_files).")
    try:
        s = read_series(files, keep_age_sex=keep_age_sex, max_voxels=limits.max_voxels, what=what)
    except CTScribeError:
        raise
    except (ValueError, TypeError, NotImplementedError, KeyError, IndexError, AttributeError, OverflowError) as e:
        # pydicom parses values lazily: a damaged element (unknown VR, a number that is not one) fails on access
        raise CorruptFileError(f"{what}: a DICOM header is damaged ({type(e).__name__}: {str(e)[:120]}); re-export "
                               "the series from the PACS or scanner.") from None
    raw = _Raw(s.array, s.affine, "dicom", s.metadata, s.source, s.warnings)
    return _finish(raw, spacing, limits, what=what)


def _zip(p: Path, spacing, keep_age_sex: bool, limits: IngestLimits) -> CTVolume:
    from vision.archive import extracted_zip

    with extracted_zip(p, max_total_mb=limits.zip_max_total_mb, max_ratio=limits.zip_max_ratio) as folder:
        files = _list_files(folder, limits)
        if not files:
            raise InputNotFoundError(f"the zip file {p.name} is empty; zip the folder that holds the DICOM slices.")
        vols = [f for f in files if _kind_from_name(f) in ("nifti", "nrrd", "npy", "npz")]
        if len(vols) == 1 and len(files) == 1:
            vol = _load_path(vols[0], spacing, keep_age_sex, limits, allow_zip=False)
        else:
            vol = _dicom(files, spacing, keep_age_sex, limits, f"the zip file {p.name!r}")
        vol.source["container"] = "zip"
        return vol


# ------------------------------------------------------------------------------------------- checks and RAS order
def _check_spacing(spacing: Sequence[float], what: str, limits: IngestLimits | None = None) -> tuple[float, ...]:
    limits = limits or IngestLimits()
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise GeometryError(f"{what}: spacing {spacing!r} must be three numbers in mm.") from None
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0.01 or max(sp) > limits.max_spacing_mm:
        raise GeometryError(f"{what}: voxel spacing {sp} mm is not plausible (each of X, Y, Z must be within "
                            f"0.01-{limits.max_spacing_mm:.0f} mm); fix the header or pass --spacing X Y Z.")
    return sp  # type: ignore[return-value]


def _finish(raw: _Raw, spacing, limits: IngestLimits, *, what: str) -> CTVolume:
    """Shape/spacing/HU checks, RAS reorientation, CTVolume assembly."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    shape = _check_shape(raw.array.shape, limits, what)
    affine = raw.affine
    warnings = list(raw.warnings)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise GeometryError(f"{what}: the voxel-to-world matrix is degenerate; fix the header (or give --spacing).")
    if spacing is not None and raw.fmt not in ("npy", "npz"):
        zooms = np.linalg.norm(affine[:3, :3], axis=0)
        if not np.allclose(zooms, spacing, rtol=1e-3):
            affine = affine.copy()
            affine[:3, :3] = affine[:3, :3] / zooms * np.asarray(spacing)
            warnings.append(f"voxel spacing {tuple(round(float(z), 4) for z in zooms)} mm from the file replaced by "
                            f"the given {tuple(spacing)} mm")
    if np.isnan(io_orientation(affine)).any():  # an axis with no direction (nibabel cannot name it)
        raise GeometryError(f"{what}: the voxel-to-world matrix is degenerate (an axis has no direction); fix the "
                            "header (or give --spacing).")
    orig_codes = "".join(nib.aff2axcodes(affine))
    array, hu_warn = check_hu(raw.array, what=what)
    warnings += hu_warn
    ornt = io_orientation(affine)
    if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        array = np.array(apply_orientation(array, ornt), order="K")  # one copy, in memory order (fast)
        affine = affine @ inv_ornt_aff(ornt, shape)
    elif not array.flags.writeable or (not array.flags.c_contiguous and not array.flags.f_contiguous):
        array = np.array(array, order="K")  # callers may write in place; keep memory order (one fast copy)
    sp = _check_spacing(np.linalg.norm(affine[:3, :3], axis=0), what, limits)
    src = dict(raw.source)
    src.setdefault("format", raw.fmt)
    src["original_orientation"] = orig_codes
    src["n_slices"] = int(array.shape[2])
    for w in raw.warnings:
        log.info("%s: %s", what, w)
    return CTVolume(array=array, spacing=tuple(round(float(s), 6) for s in sp), affine=affine,
                    metadata=dict(raw.metadata), source=src, warnings=warnings)


__all__ = ["CTScribeError", "IngestLimits", "load_ct", "sniff"]
