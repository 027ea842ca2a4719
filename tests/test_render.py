"""Windowing, radiological display convention, true aspect, overlays, speed and the PNG montage."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vision.errors import GeometryError
from vision.render import apply_window, montage_png, slice_rgb, window_bounds
from vision.volume import CTVolume


def _vol(shape=(64, 48, 16), spacing=(0.5, 0.5, 2.0)) -> CTVolume:
    a = np.full(shape, -1000, np.int16)
    return CTVolume(a, spacing, np.diag([*spacing, 1.0]))


def test_apply_window_int16_lut_matches_float_path():
    hu = np.arange(-2000, 3000, 7, dtype=np.int16).reshape(-1, 1)
    for w in ("lung", "mediastinum", (-160, 240)):
        lut = apply_window(hu, w)
        flt = apply_window(hu.astype(np.float32), w)
        assert lut.dtype == np.uint8 and np.array_equal(lut, flt)
    lo, hi = window_bounds("lung")
    assert (lo, hi) == (-1350.0, 150.0)
    out = apply_window(np.array([lo - 1, lo, hi, hi + 1], np.int16), "lung")
    assert out.tolist() == [0, 0, 255, 255]
    assert window_bounds("mediastinal") == window_bounds("mediastinum")
    with pytest.raises(GeometryError):
        window_bounds("rainbow")


def test_radiological_convention_and_superior_up():
    v = _vol()
    x, y, z = 60, 44, 14  # patient's right (high X), anterior (high Y), superior (high Z) corner
    v.array[x, y, :] = 1000
    v.array[x, :, z] = 1000
    v.array[:, y, z] = 1000
    ax = slice_rgb(v, "axial", z, "mediastinum", square_pixels=False)[:, :, 0]
    r, c = np.argwhere(ax == 255).mean(axis=0)
    assert ax.shape == (48, 64)
    assert c < 64 / 2 and r < 48 / 2  # patient right on image left, anterior at top
    co = slice_rgb(v, "coronal", y, "mediastinum", square_pixels=False)[:, :, 0]
    r, c = np.argwhere(co == 255).mean(axis=0)
    assert co.shape == (16, 64) and c < 32 and r < 8  # right on the left, superior at top
    sa = slice_rgb(v, "sagittal", x, "mediastinum", square_pixels=False)[:, :, 0]
    r, c = np.argwhere(sa == 255).mean(axis=0)
    assert sa.shape == (16, 48) and c < 24 and r < 8  # anterior on the left, superior at top


def test_square_pixels_use_spacing():
    v = _vol(spacing=(0.5, 0.5, 2.0))
    assert slice_rgb(v, "axial").shape == (48, 64, 3)
    assert slice_rgb(v, "coronal").shape == (64, 64, 3)  # 16 slices x 2 mm = 64 rows of 0.5 mm
    assert slice_rgb(v, "sagittal").shape == (64, 48, 3)
    with pytest.raises(GeometryError):
        slice_rgb(v, "axial", 99)
    with pytest.raises(GeometryError):
        slice_rgb(v, "oblique")


def test_overlay_colours_only_the_mask():
    v = _vol()
    mask = np.zeros(v.shape, bool)
    mask[10:20, 10:20, :] = True
    img = slice_rgb(v, "axial", 8, "mediastinum", {"lesion": (mask, (255, 0, 0))}, alpha=0.5,
                    square_pixels=False)
    red = (img[:, :, 0] > img[:, :, 1])
    assert red.sum() == 100
    assert (img[~red] == 0).all()  # air in the mediastinal window stays black
    with pytest.raises(GeometryError):
        slice_rgb(v, "axial", 8, "lung", {"bad": (mask[:5], (0, 255, 0))})


def test_slice_rgb_is_fast_at_512():
    rng = np.random.default_rng(0)
    v = CTVolume(rng.integers(-1024, 2000, (512, 512, 120), dtype=np.int16), (0.7, 0.7, 1.5), np.eye(4))
    mask = np.zeros(v.shape, bool)
    mask[100:200, 100:200, 50:70] = True
    for plane in ("axial", "coronal", "sagittal"):
        slice_rgb(v, plane, None, "lung", {"m": (mask, (0, 255, 0))})
        times = []
        for _ in range(5):
            t = time.perf_counter()
            slice_rgb(v, plane, 60, "lung", {"m": (mask, (0, 255, 0))})
            times.append(time.perf_counter() - t)
        assert min(times) < 0.030, f"{plane}: {min(times) * 1000:.1f} ms"


def test_montage_png(tmp_path):
    from PIL import Image

    v = _vol((64, 64, 32), (1.0, 1.0, 2.0))
    v.array[16:48, 16:48, 8:24] = 40
    p = montage_png(v, tmp_path / "sub" / "m.png")
    img = np.asarray(Image.open(p))
    assert img.shape == (512, 768, 3)
    assert img[256:, :256].mean() > 0 and img[:256, 512:].mean() > 0  # every tile has content
