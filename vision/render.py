"""Slices for people: HU windows, radiological display convention, true aspect, mask overlays, PNG montages.

Display convention (what radiologists expect): axial and coronal images show the patient's right on the image's
left and anterior/superior at the top; sagittal images show anterior on the left and superior at the top. Pixels
are made square by nearest-neighbour resampling of the slice with the voxel spacing, so a 3 mm slice stack does not
look squashed. ``slice_rgb`` only touches one slice (a 512x512 slice renders in about 2 ms), so the app's viewer
calls it per scroll event.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vision.errors import GeometryError
from vision.registry import WINDOWS
from vision.volume import CTVolume

PLANES = ("axial", "coronal", "sagittal")
Window = str | tuple[float, float]


def window_bounds(window: Window) -> tuple[float, float]:
    """``(low, high)`` HU of a named window (``vision.registry.WINDOWS``) or of an explicit pair."""
    if isinstance(window, str):
        try:
            w = WINDOWS[window.lower().replace("mediastinal", "mediastinum")]
        except KeyError:
            raise GeometryError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)} or (low, high) HU") from None
        return float(w.low), float(w.high)
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise GeometryError(f"window {window!r}: high must be above low (HU)")
    return lo, hi


@functools.lru_cache(maxsize=32)
def _lut_int16(lo: float, hi: float) -> np.ndarray:
    """uint8 lookup table indexed by int16 values reinterpreted as uint16 (65536 entries)."""
    v = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.float32)
    return np.clip(np.rint((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def apply_window(array_hu: np.ndarray, window: Window) -> np.ndarray:
    """Map HU to grey levels: ``low`` → 0, ``high`` → 255, clipped. Any shape; int16 uses a lookup table.

    Args:
        array_hu: HU values, any shape, int16 or float.
        window: a window name (``lung``, ``mediastinum``/``mediastinal``, ``bone``, ``abdomen``) or ``(low, high)``.

    Returns:
        uint8 array of the same shape.
    """
    lo, hi = window_bounds(window)
    a = np.asarray(array_hu)
    if a.dtype == np.int16:
        return _lut_int16(lo, hi)[a.view(np.uint16)]
    out = (a.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _plane_axes(plane: str) -> tuple[int, int, int]:
    """(sliced axis, row axis, column axis) in RAS voxel order for a plane."""
    p = plane.lower()
    if p == "axial":
        return 2, 1, 0
    if p == "coronal":
        return 1, 2, 0
    if p == "sagittal":
        return 0, 2, 1
    raise GeometryError(f"unknown plane {plane!r}; use axial, coronal or sagittal")


def display_slice(array: np.ndarray, plane: str, index: int | None = None) -> np.ndarray:
    """One slice of an (X, Y, Z) RAS array in display orientation (rows top→bottom, columns left→right).

    Rows run from anterior/superior to posterior/inferior; columns from the patient's right to left (axial,
    coronal) or from anterior to posterior (sagittal). ``index`` defaults to the middle slice.
    """
    ax, _, _ = _plane_axes(plane)
    n = array.shape[ax]
    i = n // 2 if index is None else int(index)
    if not 0 <= i < n:
        raise GeometryError(f"{plane} slice {i} is outside 0..{n - 1}")
    s = array[(slice(None),) * ax + (i,)]  # a view; remaining axes keep RAS order: (X, Y), (X, Z) or (Y, Z)
    return s[::-1, ::-1].T


def _square_indices(n_rows: int, n_cols: int, row_mm: float, col_mm: float) -> tuple[np.ndarray, np.ndarray]:
    px = min(row_mm, col_mm)
    out_r = max(1, round(n_rows * row_mm / px))
    out_c = max(1, round(n_cols * col_mm / px))
    ri = np.minimum(((np.arange(out_r) + 0.5) * px / row_mm).astype(np.intp), n_rows - 1)
    ci = np.minimum(((np.arange(out_c) + 0.5) * px / col_mm).astype(np.intp), n_cols - 1)
    return ri, ci


def slice_rgb(volume: CTVolume, plane: str = "axial", index: int | None = None, window: Window = "lung",
              overlays: Mapping[str, tuple[np.ndarray, Sequence[int]]] | None = None, alpha: float = 0.4,
              *, square_pixels: bool = True) -> np.ndarray:
    """Render one slice as RGB with optional coloured mask overlays.

    Args:
        volume: the CT (HU, (X, Y, Z) RAS).
        plane: ``axial``, ``coronal`` or ``sagittal``.
        index: slice index along the plane's normal axis (Z, Y or X); default middle.
        window: HU window name or ``(low, high)``.
        overlays: ``{name: (mask (X, Y, Z) bool/int, (r, g, b) 0-255)}`` blended in order.
        alpha: overlay opacity in [0, 1].
        square_pixels: resample so one pixel has the same size in mm along rows and columns.

    Returns:
        uint8 array (H, W, 3).
    """
    _, row_ax, col_ax = _plane_axes(plane)
    grey = apply_window(display_slice(volume.array, plane, index), window)
    ri = ci = None
    if square_pixels:
        ri, ci = _square_indices(grey.shape[0], grey.shape[1], float(volume.spacing[row_ax]),
                                 float(volume.spacing[col_ax]))
        grey = grey[ri][:, ci]
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    for name, (mask, color) in (overlays or {}).items():
        if tuple(mask.shape) != volume.shape:
            raise GeometryError(f"overlay {name!r} has shape {tuple(mask.shape)}, the volume {volume.shape}")
        m = display_slice(mask, plane, index).astype(bool, copy=False)
        if ri is not None:
            m = m[ri][:, ci]
        if m.any():
            c = np.asarray(color, dtype=np.float32)[:3]
            rgb[m] = np.rint(rgb[m] * (1.0 - alpha) + c * alpha).astype(np.uint8)
    return rgb


def montage(volume: CTVolume, *, windows: Sequence[Window] = ("lung", "mediastinum"), tile: int = 256,
            index: Mapping[str, int] | None = None) -> np.ndarray:
    """Axial/coronal/sagittal middle slices (columns) × windows (rows), each fitted into a ``tile`` square.

    Returns:
        uint8 array (len(windows) * tile, 3 * tile, 3).
    """
    from PIL import Image

    out = np.zeros((len(windows) * tile, len(PLANES) * tile, 3), np.uint8)
    for r, w in enumerate(windows):
        for c, plane in enumerate(PLANES):
            img = slice_rgb(volume, plane, (index or {}).get(plane), w)
            h, wd = img.shape[:2]
            scale = tile / max(h, wd)
            size = (max(1, round(wd * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
            y0 = r * tile + (tile - small.shape[0]) // 2
            x0 = c * tile + (tile - small.shape[1]) // 2
            out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out


def montage_png(volume: CTVolume, path: str | Path, *, tile: int = 256) -> Path:
    """Write the :func:`montage` (rows: lung, mediastinal window; columns: axial, coronal, sagittal) as PNG,
    with a small caption per tile. Returns the path."""
    from PIL import Image, ImageDraw

    arr = montage(volume, tile=tile)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    for r, w in enumerate(("lung", "mediastinal")):
        for c, plane in enumerate(PLANES):
            draw.text((c * tile + 4, r * tile + 2), f"{plane} / {w}", fill=(255, 255, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
