"""Vectorised geometry for the synthetic phantom: a physical grid and shapes evaluated only inside their bounding box.

Coordinates are world RAS+ millimetres (+x = patient right, +y = anterior, +z = superior) with the origin at the
centre of the volume. Every shape is returned as a :class:`Shape` — a bounding box (tuple of slices) plus a local
boolean mask — so painting a 3 mm vessel never touches the other 8 million voxels of a 256x256x128 grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[slice, slice, slice]


@dataclass
class Shape:
    """A boolean mask restricted to a bounding box of the grid.

    Args:
        box: slices (X, Y, Z) into the full grid.
        mask: bool array with the shape of ``box``.
    """

    box: Box
    mask: np.ndarray

    def full(self, shape: Sequence[int]) -> np.ndarray:
        """The mask expanded to the full grid, bool (X, Y, Z)."""
        out = np.zeros(tuple(shape), dtype=bool)
        out[self.box] = self.mask
        return out

    @property
    def empty(self) -> bool:
        return not self.mask.any()


class Grid:
    """Voxel centres of an (X, Y, Z) volume in RAS mm, origin-centred.

    Args:
        shape: number of voxels along (X, Y, Z).
        spacing: voxel size in mm along (X, Y, Z).
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.axes = [((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s).astype(np.float32)
                     for n, s in zip(self.shape, self.spacing)]
        self.voxel_volume_mm3 = float(np.prod(self.spacing))

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel→RAS mm matrix (diagonal spacing, origin at the volume centre)."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(self.shape, self.spacing)]
        return aff

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Half field of view (mm) along each axis, centre of the first voxel to the centre."""
        return tuple(float(a[-1]) for a in self.axes)  # type: ignore[return-value]

    def box(self, lo: Sequence[float], hi: Sequence[float]) -> Box | None:
        """Slices of the voxels whose centres lie in [lo, hi] mm (per axis); None when empty."""
        out = []
        for a, s, l, h in zip(self.axes, self.spacing, lo, hi):
            i0 = int(np.searchsorted(a, l - 1e-4, side="left"))
            i1 = int(np.searchsorted(a, h + 1e-4, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open (broadcastable) coordinate arrays x (n,1,1), y (1,n,1), z (1,1,n) in mm for ``box``."""
        x = self.axes[0][box[0]][:, None, None]
        y = self.axes[1][box[1]][None, :, None]
        z = self.axes[2][box[2]][None, None, :]
        return x, y, z

    def full_box(self) -> Box:
        return (slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))

    def to_voxel(self, p_mm: Sequence[float]) -> tuple[int, int, int]:
        """Nearest voxel index of a point in mm (clipped to the grid)."""
        return tuple(int(np.clip(round(p / s + (n - 1) / 2.0), 0, n - 1))  # type: ignore[return-value]
                     for p, s, n in zip(p_mm, self.spacing, self.shape))

    def to_mm(self, idx: Sequence[float]) -> tuple[float, float, float]:
        return tuple(float((i - (n - 1) / 2.0) * s) for i, s, n in zip(idx, self.spacing, self.shape))  # type: ignore


def _empty(grid: Grid) -> Shape:
    return Shape((slice(0, 0), slice(0, 0), slice(0, 0)), np.zeros((0, 0, 0), dtype=bool))


def ellipsoid(grid: Grid, center: Sequence[float], radii: Sequence[float],
              rotation: np.ndarray | None = None) -> Shape:
    """Solid ellipsoid.

    Args:
        center: centre in mm (RAS).
        radii: semi-axes in mm along the (rotated) local axes.
        rotation: optional 3x3 matrix whose columns are the local axes in world coordinates.
    """
    c = np.asarray(center, dtype=np.float64)
    r = np.asarray(radii, dtype=np.float64)
    if rotation is None:
        half = r
    else:
        half = np.sqrt(((np.asarray(rotation) * r[None, :]) ** 2).sum(axis=1))
    box = grid.box(c - half, c + half)
    if box is None:
        return _empty(grid)
    x, y, z = grid.coords(box)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    if rotation is None:
        q = (dx / r[0]) ** 2 + (dy / r[1]) ** 2 + (dz / r[2]) ** 2
    else:
        R = np.asarray(rotation, dtype=np.float32)
        q = 0
        for k in range(3):
            u = dx * R[0, k] + dy * R[1, k] + dz * R[2, k]
            q = q + (u / r[k]) ** 2
    return Shape(box, q <= 1.0)


def ellipsoid_field(grid: Grid, box: Box, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Normalised squared radius ((x-c)/r)^2 summed over axes, float32 over ``box`` (<= 1 inside)."""
    x, y, z = grid.coords(box)
    return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((z - center[2]) / radii[2]) ** 2


def tube(grid: Grid, points: Sequence[Sequence[float]], radii: float | Sequence[float]) -> Shape:
    """Union of capsules along a polyline (a vessel, an airway, a rib), radius linearly interpolated per segment.

    Args:
        points: (N, 3) polyline vertices in mm, N >= 2.
        radii: one radius in mm, or one per vertex.
    """
    P = np.asarray(points, dtype=np.float64)
    R = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(P),))
    rmax = float(R.max())
    box = grid.box(P.min(axis=0) - rmax, P.max(axis=0) + rmax)
    if box is None:
        return _empty(grid)
    out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    for a, b, ra, rb in zip(P[:-1], P[1:], R[:-1], R[1:]):
        _segment_into(grid, box, out, a, b, ra, rb)
    return Shape(box, out)


def _segment_into(grid: Grid, outer: Box, out: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float,
                  rb: float) -> None:
    r = max(ra, rb)
    sub = grid.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
    if sub is None:
        return
    sub = tuple(slice(max(s.start, o.start), min(s.stop, o.stop)) for s, o in zip(sub, outer))
    if any(s.stop <= s.start for s in sub):
        return
    x, y, z = grid.coords(sub)  # type: ignore[arg-type]
    d = (b - a).astype(np.float32)
    dd = float(d @ d) or 1e-6
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / dd, 0.0, 1.0)
    dist2 = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2
    rad = ra + t * (rb - ra)
    local = tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(sub, outer))
    out[local] |= dist2 <= rad * rad


def segments(grid: Grid, segs: Iterable[tuple[Sequence[float], Sequence[float], float, float]]) -> Shape:
    """Union of many independent capsules (a branching tree): each item is (a_mm, b_mm, radius_a, radius_b)."""
    segs = [(np.asarray(a, float), np.asarray(b, float), float(ra), float(rb)) for a, b, ra, rb in segs]
    if not segs:
        return _empty(grid)
    lo = np.min([np.minimum(a, b) - max(ra, rb) for a, b, ra, rb in segs], axis=0)
    hi = np.max([np.maximum(a, b) + max(ra, rb) for a, b, ra, rb in segs], axis=0)
    box = grid.box(lo, hi)
    if box is None:
        return _empty(grid)
    out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    for a, b, ra, rb in segs:
        _segment_into(grid, box, out, a, b, ra, rb)
    return Shape(box, out)


def ball_exact(grid: Grid, center: Sequence[float], diameter_mm: float, rng: np.random.Generator,
               tries: int = 24) -> tuple[Shape, np.ndarray]:
    """A voxelised sphere whose voxel count matches the physical volume as closely as the spacing allows.

    The centre is jittered by sub-voxel offsets and the offset whose mask volume is closest to pi d^3 / 6 wins, so
    the equivalent-sphere diameter (6 V / pi)^(1/3) of the mask is within a few percent of ``diameter_mm`` for any
    (also anisotropic) spacing once the sphere spans a couple of voxels.

    Returns:
        (shape, centre_mm) with the centre actually used.
    """
    target = np.pi * diameter_mm ** 3 / 6.0 / grid.voxel_volume_mm3
    sp = np.asarray(grid.spacing)
    best: tuple[float, Shape, np.ndarray] | None = None
    c0 = np.asarray(center, dtype=np.float64)
    for i in range(tries):
        c = c0 if i == 0 else c0 + (rng.random(3) - 0.5) * sp
        s = ellipsoid(grid, c, [diameter_mm / 2.0] * 3)
        n = int(s.mask.sum())
        if n == 0:  # a sphere smaller than a voxel: keep the nearest voxel so the finding is never invisible
            v = grid.to_voxel(c)
            s = Shape(tuple(slice(i, i + 1) for i in v), np.ones((1, 1, 1), bool))  # type: ignore[arg-type]
            n = 1
        err = abs(n - target)
        if best is None or err < best[0]:
            best = (err, s, c)
        if err <= 0.5:
            break
    assert best is not None
    return best[1], best[2]
