"""Small morphology helpers in millimetres (scipy.ndimage underneath) shared by the region and measurement code.

All masks are bool arrays (X, Y, Z) in RAS voxel order; ``spacing`` is the voxel size in mm along (X, Y, Z).
"In-plane" operations act on each axial (X, Y) slice independently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from scipy import ndimage as ndi

_INPLANE_Z = 1e6  # EDT sampling along Z that makes a 3D distance transform behave per axial slice


def ball(radius_mm: float, spacing: tuple[float, float, float], in_plane: bool = False) -> np.ndarray:
    """Ellipsoidal structuring element of ``radius_mm`` on an anisotropic grid (at least the 3x3 cross)."""
    r = [max(0, int(np.floor(radius_mm / s + 1e-6))) for s in spacing]
    if in_plane:
        r[2] = 0
    if max(r) == 0:
        return ndi.generate_binary_structure(3, 1)
    g = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    d = sum((gi * s) ** 2 for gi, s in zip(g, spacing))
    return d <= radius_mm ** 2 + 1e-6


def dilate(mask: np.ndarray, radius_mm: float, spacing, in_plane: bool = False, coarse: bool = False) -> np.ndarray:
    """Euclidean dilation by ``radius_mm`` via a distance transform (fast for large radii).

    ``coarse=True`` (for search regions, where a voxel more or less does not matter) runs the distance transform
    on a 2x coarser in-plane grid when the radius spans more than 4 voxels: the result contains the exact dilation
    and exceeds it by at most one coarse voxel.
    """
    if not mask.any():
        return mask.copy()
    m = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    if in_plane:
        m[2] = 0
    bb = bbox(mask, margin=max(m))
    out = np.zeros_like(mask, dtype=bool)
    if _small(radius_mm, spacing, in_plane):
        out[bb] = ndi.binary_dilation(mask[bb], structure=ball(radius_mm, spacing, in_plane))
        return out
    if coarse and radius_mm / min(spacing[0], spacing[1]) > 4.0:
        sub = mask[bb]
        f = (2, 2, 1)
        pad = [(0, (-n) % k) for n, k in zip(sub.shape, f)]
        sub = np.pad(sub, pad) if any(p[1] for p in pad) else sub
        X, Y, Z = (n // k for n, k in zip(sub.shape, f))
        c = sub.reshape(X, 2, Y, 2, Z).any(axis=(1, 3))
        # fine voxel centres lie within half a fine 2x2 diagonal of their coarse centre: two such offsets of slack
        slack = float(np.hypot(spacing[0], spacing[1]))
        samp = (2 * spacing[0], 2 * spacing[1], _INPLANE_Z if in_plane else spacing[2])
        d = ndi.distance_transform_edt(~c, sampling=samp) <= radius_mm + slack
        shape = tuple(b.stop - b.start for b in bb)
        out[bb] = upsample_nearest(d, f, shape)
        return out | mask
    samp = (spacing[0], spacing[1], _INPLANE_Z if in_plane else spacing[2])
    out[bb] = ndi.distance_transform_edt(~mask[bb], sampling=samp) <= radius_mm
    return out


def erode(mask: np.ndarray, radius_mm: float, spacing, in_plane: bool = False) -> np.ndarray:
    """Euclidean erosion by ``radius_mm`` via a distance transform."""
    if not mask.any():
        return mask.copy()
    bb = bbox(mask, margin=1)
    out = np.zeros_like(mask, dtype=bool)
    if _small(radius_mm, spacing, in_plane):
        out[bb] = ndi.binary_erosion(mask[bb], structure=ball(radius_mm, spacing, in_plane))
        return out
    samp = (spacing[0], spacing[1], _INPLANE_Z if in_plane else spacing[2])
    out[bb] = ndi.distance_transform_edt(np.pad(mask[bb], 1), sampling=samp)[1:-1, 1:-1, 1:-1] > radius_mm
    return out


def _small(radius_mm: float, spacing, in_plane: bool = False) -> bool:
    """Structuring elements of up to ~150 voxels (radius ~3 voxels in 3D, ~6 in-plane) beat a distance transform
    on these grids (measured: 5 mm ball at 1.7/1.7/3 mm, 0.07 s vs 0.27 s on a 171x171x99 lung mask)."""
    return int(ball(radius_mm, spacing, in_plane).sum()) <= 150


def close(mask: np.ndarray, radius_mm: float, spacing, in_plane: bool = False) -> np.ndarray:
    return erode(dilate(mask, radius_mm, spacing, in_plane), radius_mm, spacing, in_plane)


def open_(mask: np.ndarray, radius_mm: float, spacing, in_plane: bool = False) -> np.ndarray:
    return dilate(erode(mask, radius_mm, spacing, in_plane), radius_mm, spacing, in_plane)


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial slice (in-plane 4-connectivity).

    Same result as ``ndi.binary_fill_holes`` with an in-plane structure, in one labelling pass: background
    components that do not reach the slice border are holes."""
    st = np.zeros((3, 3, 3), bool)
    st[:, :, 1] = ndi.generate_binary_structure(2, 1)
    bg = ~np.asarray(mask, bool)
    lab, n = ndi.label(bg, structure=st)
    if n == 0:
        return ~bg
    outside = np.zeros(n + 1, bool)
    for face in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
        outside[face] = True
    outside[0] = False  # label 0 is the mask itself
    return ~outside[lab]


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label 6-connected components; returns (labels, sizes) with sizes[0] = 0 for the background."""
    lab, n = ndi.label(mask)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab, sizes


def largest(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (empty in, empty out)."""
    lab, sizes = components(mask)
    if sizes.size <= 1 or sizes.max() == 0:
        return np.zeros_like(mask, bool)
    return lab == int(sizes.argmax())


def bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding-box slices of a mask (None when empty), grown by ``margin`` voxels and clipped."""
    idx = [np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    if any(len(i) == 0 for i in idx):
        return None
    return tuple(slice(max(0, int(i[0]) - margin), min(mask.shape[k], int(i[-1]) + 1 + margin))
                 for k, i in enumerate(idx))


def block_mean(a: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Downsample by integer ``factors`` with a block average; float32 out of shape ``ceil(shape / factors)``.

    Partial blocks at the far edges average the voxels they have. Sums run with ``np.add.reduceat`` on the input
    dtype (no float copy of the full-resolution volume).
    """
    if tuple(factors) == (1, 1, 1):
        return np.asarray(a, np.float32)
    out = np.asarray(a)
    counts = []
    for ax, f in enumerate(factors):
        n = out.shape[ax]
        if f == 1:
            counts.append(np.ones(n, np.float32))
            continue
        starts = np.arange(0, n, f)
        out = np.add.reduceat(out, starts, axis=ax, dtype=np.float32)
        counts.append(np.minimum(starts + f, n).astype(np.float32) - starts)
    out /= counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    return out


def upsample_nearest(mask: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a work-grid mask back to the original grid ``shape``."""
    if factors == (1, 1, 1):
        return mask
    idx = [np.minimum(np.arange(n) // f, m - 1) for n, f, m in zip(shape, factors, mask.shape)]
    return mask[np.ix_(*idx)]


class UpsampledMasks(Mapping):
    """A read-only dict of masks kept on the work grid and upsampled (then cached) on first access."""

    def __init__(self, work: dict[str, np.ndarray], factors: tuple[int, int, int], shape: tuple[int, int, int]):
        self._work, self._factors, self._shape, self._cache = work, factors, shape, {}

    @property
    def work(self) -> dict[str, np.ndarray]:
        """The masks on the coarse work grid (read-only: do not modify)."""
        return self._work

    @property
    def factors(self) -> tuple[int, int, int]:
        """Work-grid voxel i covers volume voxels [i*f, (i+1)*f) per axis."""
        return self._factors

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = upsample_nearest(self._work[key], self._factors, self._shape)
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._work)

    def __len__(self) -> int:
        return len(self._work)


def convex_hull_2d(mask: np.ndarray) -> np.ndarray:
    """Per axial slice convex hull of a mask (scipy.spatial.ConvexHull on the voxel corners)."""
    from scipy.spatial import ConvexHull, QhullError

    out = np.zeros_like(mask, dtype=bool)
    for z in np.flatnonzero(mask.any(axis=(0, 1))):
        sl = mask[:, :, z]
        rows = np.flatnonzero(sl.any(axis=0))  # per-row extreme pixels are enough for the hull
        lo = sl[:, rows].argmax(axis=0)
        hi = sl.shape[0] - 1 - sl[::-1, rows].argmax(axis=0)
        ii, jj = np.concatenate([lo, hi]), np.concatenate([rows, rows])
        if ii.size < 3:
            out[:, :, z] = sl
            continue
        pts = np.concatenate([np.stack([ii + dx, jj + dy], 1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
        try:
            eq = ConvexHull(pts).equations
        except QhullError:
            out[:, :, z] = sl
            continue
        # convex polygon: per row j the inside columns form one interval bounded by the hull's half-planes
        # a*i + b*j + c <= 0 (i <= (-b*j - c)/a for a > 0, i >= ... for a < 0)
        i0, i1, j0, j1 = ii.min(), ii.max() + 1, jj.min(), jj.max() + 1
        jr = np.arange(j0, j1, dtype=float)[:, None]
        a, b, c = eq[:, 0], eq[:, 1], eq[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = (-b * jr - c) / a
        pos, neg = a > 1e-12, a < -1e-12
        hi = np.min(np.where(pos, bound, np.inf), axis=1) if pos.any() else np.full(jr.shape[0], np.inf)
        lo = np.max(np.where(neg, bound, -np.inf), axis=1) if neg.any() else np.full(jr.shape[0], -np.inf)
        flat = np.abs(a) <= 1e-12  # horizontal edges: the whole row is in or out
        if flat.any():
            ok = (b[flat] * jr + c[flat] <= 1e-9).all(axis=1)
            hi = np.where(ok, hi, -np.inf)
        gi = np.arange(i0, i1, dtype=float)[:, None]
        inside = (gi >= lo[None, :] - 1e-9) & (gi <= hi[None, :] + 1e-9)
        out[i0:i1, j0:j1, z] = inside | sl[i0:i1, j0:j1]
    return out
