"""DICOM series reading with pydicom: series choice, slice sorting, spacing checks, rescale, PHI-free metadata.

The result is an array in DICOM voxel order (column i, row j, slice k) plus a RAS+ affine; ``vision.io`` turns it
into canonical RAS voxel order like every other format. Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000,
RLE) are decoded by pydicom's pixel handlers: pylibjpeg + pylibjpeg-openjpeg (or gdcm) must be installed.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vision.errors import CorruptFileError, GeometryError, InputNotFoundError, NotCTError, UnsupportedFormatError

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class DicomSeries:
    """A DICOM series read into memory.

    Args:
        array: stored-order voxels, shape (I columns, J rows, K slices), HU after rescale (int16 or float32).
        affine: 4x4 voxel (i, j, k) → RAS+ mm.
        metadata: PHI-free acquisition metadata.
        source: how the series was chosen (PHI-free).
        warnings: notes about dropped duplicates, small spacing irregularities, tilt.
    """

    array: np.ndarray
    affine: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _is_localizer(ds: Any) -> bool:
    return "LOCALIZER" in [str(x).upper() for x in (ds.get("ImageType") or [])]


def _has_pixels(ds: Any) -> bool:
    return any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def read_headers(files: Sequence[Path]) -> tuple[list[tuple[Path, Any]], int, list[str]]:
    """Read every file's header (pixel data deferred). Returns ``(datasets, n_not_dicom, corrupt_messages)``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out: list[tuple[Path, Any]] = []
    not_dicom = 0
    corrupt: list[str] = []
    for p in files:
        try:
            ds = pydicom.dcmread(p, defer_size=4096)
        except InvalidDicomError:
            not_dicom += 1
            continue
        except Exception as e:  # noqa: BLE001 - truncated header, bad VR lengths, ...
            corrupt.append(f"{p.name}: {type(e).__name__}: {e}")
            continue
        if not any(t in ds for t in ("SOPClassUID", "Modality", "PixelData")):  # parsed, but nothing usable
            corrupt.append(f"{p.name}: no SOP class, modality or pixel data (damaged header)")
            continue
        out.append((p, ds))
    return out, not_dicom, corrupt


def _series_key(ds: Any) -> str:
    return str(ds.get("SeriesInstanceUID") or f"series-{ds.get('SeriesNumber', '?')}")


def read_series(files: Sequence[Path], *, keep_age_sex: bool = False, max_voxels: int | None = None,
                what: str = "the DICOM input") -> DicomSeries:
    """Read the CT series with the most slices among ``files``.

    Raises:
        InputNotFoundError: no DICOM file at all.
        CorruptFileError: unreadable DICOM headers/pixels, or images without pixel data.
        NotCTError: no series has Modality CT.
        GeometryError: one slice, mixed matrix sizes/orientations, uneven or missing slices, too many voxels.
        UnsupportedFormatError: enhanced multi-frame objects, missing JPEG decoders.
    """
    datasets, not_dicom, corrupt = read_headers(files)
    if not datasets:
        if corrupt:
            raise CorruptFileError(f"{what}: {len(corrupt)} DICOM file(s) are damaged and none could be read "
                                   f"(first: {corrupt[0]}); re-export the series from the PACS or scanner.")
        raise InputNotFoundError(f"{what} has no DICOM files ({not_dicom} other file(s) found); pass a folder or "
                                 "zip of a DICOM series, or a NIfTI/NRRD file.")
    warnings: list[str] = []
    if corrupt:
        warnings.append(f"skipped {len(corrupt)} unreadable DICOM file(s) (first: {corrupt[0]})")

    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for p, ds in datasets:
        groups[_series_key(ds)].append((p, ds))
    summary = []
    for key, items in groups.items():
        ds0 = items[0][1]
        images = [it for it in items if _has_pixels(it[1]) and not _is_localizer(it[1])]
        summary.append({"key": key, "modality": str(ds0.get("Modality", "?")), "n_files": len(items),
                        "n_slices": len(images),  # SeriesDescription is free text (may hold PHI): never kept
                        "number": ds0.get("SeriesNumber")})
    ct = [s for s in summary if s["modality"].upper() == "CT"]
    if not ct:
        mods = ", ".join(sorted({s["modality"] for s in summary}))
        raise NotCTError(f"{what} holds no CT series (modalities found: {mods}); ctscribe reads CT only. "
                         "Pass the CT series of the study.")
    ct_with_px = [s for s in ct if s["n_slices"] > 0]
    if not ct_with_px:
        raise CorruptFileError(f"{what}: the CT DICOM files have no pixel data (headers only, or a structured report / "
                               "localizer only); export the image series itself.")
    ct_with_px.sort(key=lambda s: s["n_slices"], reverse=True)
    chosen = ct_with_px[0]
    if len(ct_with_px) == 1:
        reason = "the only CT series with images"
    else:
        others = "; ".join(f"{_series_name(s)} ({s['n_slices']} slices)" for s in ct_with_px[1:])
        reason = f"most slices among {len(ct_with_px)} CT series (others: {others})"
        warnings.append(f"several CT series found; using {_series_name(chosen)} with {chosen['n_slices']} slices "
                        f"({reason})")
    items = [it for it in groups[chosen["key"]] if _has_pixels(it[1]) and not _is_localizer(it[1])]
    source = {"format": "dicom", "n_files": len(files), "n_series": len(summary),
              "series": {"number": None if chosen["number"] is None else int(chosen["number"]),
                         "modality": "CT", "n_slices": chosen["n_slices"]},
              "series_reason": reason,
              "candidates": [{k: s[k] for k in ("modality", "number", "n_slices")} for s in summary]}
    array, affine, geo_warn = _stack(items, max_voxels=max_voxels, what=what)
    warnings += geo_warn
    source["n_slices"] = int(array.shape[2])
    meta = phi_free_metadata(items[0][1], keep_age_sex=keep_age_sex)
    return DicomSeries(array, affine, meta, source, warnings)


def _stack(items: list[tuple[Path, Any]], *, max_voxels: int | None, what: str
           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    warnings: list[str] = []
    ds0 = items[0][1]
    if int(ds0.get("NumberOfFrames", 1) or 1) > 1:
        raise UnsupportedFormatError(f"{what} is an enhanced multi-frame DICOM object; ctscribe reads classic "
                                     "one-slice-per-file series. Convert it with dcm2niix to NIfTI and pass that.")
    if len(items) < 2:
        raise GeometryError(f"{what} holds a single 2D image, not a volume; pass the whole series (all slices).")
    sizes = Counter((int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in items)
    if len(sizes) > 1:
        desc = ", ".join(f"{r}x{c} ({n} files)" for (r, c), n in sizes.most_common())
        raise GeometryError(f"{what}: slices of one series have mixed matrix sizes ({desc}); the series is not a "
                            "consistent volume. Remove the odd files (e.g. scouts or reformats) and try again.")
    geo = []
    for p, ds in items:
        iop, ipp = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient")
        if iop is None or ipp is None or len(iop) != 6 or len(ipp) != 3:
            raise GeometryError(f"{what}: {p.name} has no ImageOrientationPatient/ImagePositionPatient, so slices "
                                "cannot be placed in space; export the series with its geometry tags.")
        geo.append((np.asarray([float(x) for x in iop]), np.asarray([float(x) for x in ipp])))
    iops = np.stack([g[0] for g in geo])
    if np.abs(iops - iops[0]).max() > 1e-3:
        raise GeometryError(f"{what}: slices have different orientations (mixed axial/reformatted images); pass one "
                            "series with a single slice orientation.")
    r, c = iops[0, :3], iops[0, 3:]
    n = np.cross(r, c)
    ipps = np.stack([g[1] for g in geo])
    pos = ipps @ n
    order = np.argsort(pos, kind="stable")
    pos, ipps = pos[order], ipps[order]
    items = [items[i] for i in order]
    keep = np.concatenate([[True], np.diff(pos) > 1e-3])
    if not keep.all():
        warnings.append(f"dropped {int((~keep).sum())} duplicate slice(s) at the same position")
        items = [it for it, k in zip(items, keep) if k]
        pos, ipps = pos[keep], ipps[keep]
    if len(items) < 2:
        raise GeometryError(f"{what}: all images sit at the same position; this is not a 3D series.")
    d = np.diff(pos)
    med = float(np.median(d))
    dev = np.abs(d - med)
    if dev.max() > max(0.1 * med, 0.02):
        gaps = [(i, float(x)) for i, x in enumerate(d) if abs(x - med) > max(0.1 * med, 0.02)]
        missing = [(i, x) for i, x in gaps if x > 1.5 * med and abs(x / med - round(x / med)) < 0.15]
        if missing and len(missing) == len(gaps):
            n_miss = int(sum(round(x / med) - 1 for _, x in missing))
            i, x = missing[0]
            raise GeometryError(f"{what}: {n_miss} slice(s) missing (gap of {x:.2f} mm after slice {i + 1}, normal "
                                f"spacing {med:.2f} mm); export the complete series.")
        raise GeometryError(f"{what}: inconsistent slice spacing ({float(d.min()):.2f} to {float(d.max()):.2f} mm, "
                            f"median {med:.2f} mm, {len(gaps)} irregular gap(s)); resample it to even spacing (e.g. "
                            "with dcm2niix or SimpleITK) or export an evenly spaced series.")
    if dev.max() > 0.01 * med:
        warnings.append(f"slice spacing varies slightly ({float(d.min()):.3f}-{float(d.max()):.3f} mm); using the "
                        "mean spacing")
    ps = items[0][1].get("PixelSpacing") or [1.0, 1.0]
    if not items[0][1].get("PixelSpacing"):
        warnings.append("PixelSpacing missing; assuming 1 mm pixels")
    row_mm, col_mm = float(ps[0]), float(ps[1])
    step = (ipps[-1] - ipps[0]) / (len(items) - 1)  # includes gantry-tilt shear, like dcm2niix/nibabel
    if np.linalg.norm(step - (step @ n) * n) > 0.01 * np.linalg.norm(step):
        warnings.append("slice positions are sheared relative to the slice normal (gantry tilt); the affine keeps "
                        "the shear")
    lps = np.eye(4)
    lps[:3, 0] = r * col_mm
    lps[:3, 1] = c * row_mm
    lps[:3, 2] = step
    lps[:3, 3] = ipps[0]
    affine = LPS_TO_RAS @ lps

    rows, cols = sizes.most_common(1)[0][0]
    nvox = rows * cols * len(items)
    if max_voxels is not None and nvox > max_voxels:
        raise GeometryError(f"{what}: {cols}x{rows}x{len(items)} = {nvox} voxels exceeds the limit {max_voxels} "
                            "(vision.max_voxels); crop or downsample the series first.")
    slopes = [float(ds.get("RescaleSlope", 1) or 1) for _, ds in items]
    inters = [float(ds.get("RescaleIntercept", 0) or 0) for _, ds in items]
    integral = all(s == 1.0 for s in slopes) and all(float(i).is_integer() for i in inters)
    # int16 straight away when every slice fits (the usual case): no int32 intermediate for 500-slice series
    out = np.empty((len(items), rows, cols), dtype=np.int16 if integral else np.float32)
    for k, (p, ds) in enumerate(items):
        try:
            px = ds.pixel_array
        except (RuntimeError, NotImplementedError) as e:
            if "decode" in str(e).lower() or "plugin" in str(e).lower() or "handler" in str(e).lower():
                ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
                raise UnsupportedFormatError(f"{what}: cannot decode transfer syntax {ts} ({e}); install pylibjpeg "
                                             "and pylibjpeg-openjpeg (JPEG 2000) or gdcm.") from None
            raise CorruptFileError(f"{what}: pixel data of {p.name} cannot be read ({e}); the file is damaged, "
                                   "re-export the series.") from None
        except Exception as e:  # noqa: BLE001 - readers raise many types; all mean 'damaged'
            raise CorruptFileError(f"{what}: pixel data of {p.name} is damaged or truncated ({type(e).__name__}: "
                                   f"{e}); re-export the series.") from None
        if px.shape != (rows, cols):
            raise CorruptFileError(f"{what}: {p.name} decodes to shape {px.shape}, expected {(rows, cols)}; the file "
                                   "is damaged or multi-frame.")
        if integral:
            inter = int(inters[k])
            if out.dtype == np.int16 and not (-32768 <= int(px.min()) + inter and int(px.max()) + inter <= 32767):
                out = out.astype(np.int32)  # rare: values beyond int16 (e.g. 32-bit exports)
            np.add(px, np.int32(inter), out=out[k], casting="unsafe")
        else:
            out[k] = px * slopes[k] + inters[k]
    array = out.transpose(2, 1, 0)  # (K, J, I) → (I, J, K), a view
    return array, affine, warnings


def _series_name(s: dict) -> str:
    """A PHI-free name for a series: its number (SeriesDescription is free text and is never shown or kept)."""
    return f"series {s['number']}" if s.get("number") is not None else "an unnumbered series"


_META_TAGS = {  # DICOM keyword → metadata key; nothing here identifies a person, a place or a date
    "Modality": "modality", "Manufacturer": "manufacturer", "ManufacturerModelName": "model", "KVP": "kvp",
    "SliceThickness": "slice_thickness", "ConvolutionKernel": "kernel",
    "BodyPartExamined": "body_part", "PhotometricInterpretation": "photometric", "ContrastBolusAgent": "contrast_agent",
}


def phi_free_metadata(ds: Any, *, keep_age_sex: bool = False) -> dict[str, Any]:
    """Whitelist the acquisition fields ctscribe needs; names, IDs, dates, institutions and addresses are dropped.

    ``age``/``sex`` are kept only with ``keep_age_sex`` (config ``privacy.keep_age_sex``).
    """
    meta: dict[str, Any] = {}
    for tag, key in _META_TAGS.items():
        v = ds.get(tag)
        if v is None or v == "":
            continue
        if tag == "ConvolutionKernel" and not isinstance(v, str):
            v = "\\".join(str(x) for x in v)
        elif tag in ("KVP", "SliceThickness"):
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
        else:
            v = str(v)
        meta[key] = v
    meta["contrast"] = bool(meta.pop("contrast_agent", "") or ds.get("ContrastBolusRoute"))
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        meta["transfer_syntax"] = getattr(ts, "name", str(ts))
    if keep_age_sex:
        if ds.get("PatientAge"):
            meta["age"] = str(ds.PatientAge)
        if ds.get("PatientSex"):
            meta["sex"] = str(ds.PatientSex)
    return meta
