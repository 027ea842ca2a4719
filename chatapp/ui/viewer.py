"""Slice rendering for the app's viewer: windowing, radiological orientation, physical aspect, mask overlays.

Uses ``vision.render.apply_window`` when engineer A's module is present, otherwise a local equivalent. Volumes are
``(X, Y, Z)`` HU arrays in RAS voxel order. Images follow the radiological convention: patient right on the image
left, anterior up (axial), superior up (coronal, sagittal), anterior on the left (sagittal).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from vision.registry import WINDOWS

PLANES = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # the volume axis each plane slices through
# Distinct, colour-blind friendlier overlay colours (RGB 0..255), assigned in overlay order.
PALETTE = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (255, 255, 255), (120, 200, 80), (255, 80, 80))
DISPLAY_PX = 384  # longest side of a rendered slice, in pixels


def apply_window(hu: np.ndarray, window: str) -> np.ndarray:
    """HU → uint8 grey levels for a named window preset (``vision.registry.WINDOWS``)."""
    try:  # engineer A's implementation, when it has landed
        from vision.render import apply_window as _aw  # type: ignore[import-not-found]

        out = np.asarray(_aw(hu, window))
        if out.dtype == np.uint8:
            return out
        return (np.clip(out, 0, 1) * 255).astype(np.uint8)
    except Exception:  # noqa: BLE001, S110 - fall back to the local equivalent on any mismatch
        pass
    w = WINDOWS[window]
    g = (np.asarray(hu, np.float32) - w.low) / max(w.width, 1e-6)
    return (np.clip(g, 0.0, 1.0) * 255).astype(np.uint8)


def _orient(plane_xy: np.ndarray, plane: str) -> np.ndarray:
    """Turn a 2D cut (first axis, second axis) into display (rows, cols) in radiological orientation."""
    img = plane_xy.T  # rows = second axis (Y for axial, Z for coronal/sagittal), cols = first axis
    return img[::-1, ::-1]  # anterior/superior up; patient right (high X) left; sagittal: anterior (high Y) left


def take_slice(arr: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D cut of a (X, Y, Z) array at ``index`` along the plane's axis, display-oriented."""
    ax = PLANE_AXIS[plane]
    index = int(np.clip(index, 0, arr.shape[ax] - 1))
    cut = [slice(None)] * arr.ndim
    cut[ax] = index
    return _orient(arr[tuple(cut)], plane)  # basic indexing: a view, no copy of the volume


def _display_size(shape_rc: tuple[int, int], spacing_rc: tuple[float, float]) -> tuple[int, int]:
    h_mm, w_mm = shape_rc[0] * spacing_rc[0], shape_rc[1] * spacing_rc[1]
    scale = DISPLAY_PX / max(h_mm, w_mm, 1e-6)
    return max(1, round(w_mm * scale)), max(1, round(h_mm * scale))


def render_slice(volume, plane: str, index: int, window: str = "lung",
                 overlays: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = (), alpha: float = 0.4) -> np.ndarray:
    """Render one slice as RGB.

    Args:
        volume: ``CTVolume`` (``array`` (X, Y, Z) HU, ``spacing`` mm).
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        index: slice index along the plane's axis (clipped to the volume).
        window: window preset name (lung, mediastinum, bone, abdomen).
        overlays: ``(mask (X, Y, Z) bool, RGB colour)`` pairs blended over the slice.
        alpha: overlay opacity in [0, 1].

    Returns:
        uint8 array (H, W, 3), resized to the physical aspect ratio (longest side ``DISPLAY_PX``).
    """
    from PIL import Image

    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    grey = apply_window(take_slice(volume.array, plane, index), window)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for mask, colour in overlays:
        m = take_slice(np.asarray(mask), plane, index).astype(bool)
        if m.any():
            rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(colour, np.float32)
    sx, sy, sz = (float(s) for s in volume.spacing)
    spacing_rc = {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[plane]
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    return np.asarray(img.resize(_display_size(grey.shape, spacing_rc), Image.Resampling.BILINEAR))


def mask_centroid(mask: np.ndarray) -> tuple[int, int, int] | None:
    """Voxel centroid (x, y, z) of a boolean mask, or None when it is empty."""
    idx = np.argwhere(np.asarray(mask, bool))
    if idx.size == 0:
        return None
    c = idx.mean(axis=0).round().astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def colour_for(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def overlay_choices(regions: dict, finding_masks: dict, absent: Iterable[str] = ()) -> list[str]:
    """Overlay names offered in the UI: ``regions/<key>`` then finding mask ids (``findings/...``)."""
    absent = set(absent)
    names = [f"regions/{k}" for k in regions if k not in absent]
    names += [k if "/" in k else f"findings/{k}" for k in finding_masks]
    return names
