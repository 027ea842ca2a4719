"""Region intensity statistics for the ``regions_hu`` encoder tokens: radiomics-style features with no learned weights.

For each anatomical region (soft mask at the encoder input grid), counts of voxels whose value exceeds fixed levels,
on four maps of the encoder input ``x`` (0..1, the preset's HU window):

- ``x`` itself at ``HU_LEVELS`` evenly spaced levels (the region's cumulative intensity histogram, IBSI first-order
  family): calcium and devices sit in the top levels, ground glass and fluid in the middle ones;
- the white top-hat (x minus its 3x3x3 grey opening: bright structures at most two voxels across: plaques, small
  nodules, nodes) and the black top-hat (grey closing minus x: small dark structures, e.g. dilated airway lumens)
  at ``TOPHAT_LEVELS``;
- Hessian shape maps at Gaussian scales ``HESSIAN_SIGMAS`` (voxels; scale-normalised by sigma^2, as in
  Frangi-style vesselness and blob filters): blobness = -(largest eigenvalue) where all three are negative (a
  bright ball: a nodule or node, not a vessel) and lineness = -(middle eigenvalue) where the largest is near zero
  (a bright tube: vessels, bands, thickened bronchial walls), at ``SHAPE_LEVELS``.

Each count comes twice: as the share of the region's voxels and as ``log1p(count)``. A few voxels of calcium or a
5 mm nodule barely move a region's mean deep feature but do move these tails. Everything is computed in torch on the
(B, 1, X, Y, Z) input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HU_LEVELS = 24  # evenly spaced exceedance levels of x (0, 1/24, ...)
TOPHAT_LEVELS = (0.02, 0.04, 0.08, 0.12, 0.2, 0.3, 0.45, 0.6)
HESSIAN_SIGMAS = (0.7, 1.0)  # Gaussian scales in voxels
SHAPE_LEVELS = (0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.2, 0.3)
LINE_RATIO = 0.25  # lineness needs |largest eigenvalue| < LINE_RATIO * |middle eigenvalue|


def region_stats_dim() -> int:
    """Channels per region: shares and log counts of every (map, level) pair (2 * (24 + 16 + 32) = 144)."""
    return 2 * (HU_LEVELS + 2 * len(TOPHAT_LEVELS) + 2 * len(HESSIAN_SIGMAS) * len(SHAPE_LEVELS))


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, X, Y, Z) with replicate padding (kernel radius ceil(3 sigma))."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    for d in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + d] = len(g)
        pad = [0] * 6
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), g.view(shape))
    return x


def hessian_eigenvalues(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eigenvalues (ascending) of the scale-normalised Hessian of (B, 1, X, Y, Z) → (B, X, Y, Z, 3).

    Closed form for symmetric 3x3 matrices (trigonometric solution of the characteristic cubic): 0.04–0.06 s instead
    of ``torch.linalg.eigvalsh``'s 0.3 s on 600k voxels (one core), equal to it within float32 rounding."""
    xs = gaussian_smooth(x, sigma)[:, 0]
    g = torch.gradient(xs, dim=(1, 2, 3))
    h = [torch.gradient(gi, dim=(1, 2, 3)) for gi in g]
    s2 = sigma * sigma
    a11, a22, a33 = h[0][0] * s2, h[1][1] * s2, h[2][2] * s2
    a12, a13, a23 = (h[0][1] + h[1][0]) * s2 / 2, (h[0][2] + h[2][0]) * s2 / 2, (h[1][2] + h[2][1]) * s2 / 2
    q = (a11 + a22 + a33) / 3
    p1 = a12 ** 2 + a13 ** 2 + a23 ** 2
    p = torch.sqrt((((a11 - q) ** 2 + (a22 - q) ** 2 + (a33 - q) ** 2 + 2 * p1) / 6).clamp_min(1e-20))
    b11, b22, b33 = (a11 - q) / p, (a22 - q) / p, (a33 - q) / p
    b12, b13, b23 = a12 / p, a13 / p, a23 / p
    det = b11 * (b22 * b33 - b23 * b23) - b12 * (b12 * b33 - b23 * b13) + b13 * (b12 * b23 - b22 * b13)
    phi = torch.acos((det / 2).clamp(-1, 1)) / 3
    hi = q + 2 * p * torch.cos(phi)
    lo = q + 2 * p * torch.cos(phi + 2 * math.pi / 3)
    return torch.stack([lo, 3 * q - hi - lo, hi], -1)


def _dilate(x: torch.Tensor) -> torch.Tensor:
    """3x3x3 grey dilation of (B, 1, X, Y, Z) (max over the 26-neighbourhood; borders see only inside voxels), as
    separable neighbour maxima: equal to ``max_pool3d(x, 3, 1, 1)`` at about a twelfth of its CPU time."""
    for d in (2, 3, 4):
        n = x.shape[d]
        y = x.clone()
        y.narrow(d, 0, n - 1).copy_(torch.maximum(y.narrow(d, 0, n - 1), x.narrow(d, 1, n - 1)))
        y.narrow(d, 1, n - 1).copy_(torch.maximum(y.narrow(d, 1, n - 1), x.narrow(d, 0, n - 1)))
        x = y
    return x


def exceedance_counts(values: torch.Tensor, levels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mask-weighted counts of voxels whose value exceeds each level (strictly).

    One weighted histogram per region over the bins the ascending ``levels`` make (``bucketize`` + ``scatter_add``),
    then a reverse cumulative sum: ~10x faster than comparing every voxel with every level.

    Args:
        values: (B, X, Y, Z).
        levels: (L,) ascending.
        weights: (B, R, X, Y, Z) region fractions.

    Returns:
        (B, R, L): sum of weights[b, r] over voxels with values > levels[l].
    """
    b, r = weights.shape[:2]
    idx = torch.bucketize(values.reshape(b, 1, -1), levels)  # number of levels strictly below each value
    hist = torch.zeros(b, r, len(levels) + 1, dtype=weights.dtype, device=weights.device)
    hist.scatter_add_(2, idx.expand(b, r, -1), weights.reshape(b, r, -1))
    above = hist.flip(-1).cumsum(-1).flip(-1)  # above[..., i]: weight of voxels with at least i levels below them
    return above[..., 1:]


def region_statistics(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The region statistics of the module docstring.

    Args:
        x: (B, 1, X, Y, Z) encoder input (0..1).
        masks: (B, R, X, Y, Z) fraction of each input voxel inside each region (0..1).

    Returns:
        (B, R, ``region_stats_dim()``) float32: shares, then log counts; an empty region gives zeros.
    """
    x = x.float()
    w = masks.float()
    opening = _dilate(-_dilate(-x))
    closing = -_dilate(-_dilate(x))
    hu = torch.arange(HU_LEVELS, device=x.device, dtype=x.dtype) / HU_LEVELS
    th = torch.tensor(TOPHAT_LEVELS, device=x.device, dtype=x.dtype)
    sh = torch.tensor(SHAPE_LEVELS, device=x.device, dtype=x.dtype)
    maps = [(x[:, 0], hu), ((x - opening)[:, 0], th), ((closing - x)[:, 0], th)]
    for sigma in HESSIAN_SIGMAS:
        e = hessian_eigenvalues(x, sigma)
        blob = (-e[..., 2]).clamp_min(0)
        line = (-e[..., 1]).clamp_min(0) * (e[..., 2].abs() < LINE_RATIO * e[..., 1].abs())
        maps += [(blob, sh), (line, sh)]
    counts = torch.cat([exceedance_counts(m, lv, w) for m, lv in maps], -1)  # (B, R, L) mask-weighted voxel counts
    total = w.sum((2, 3, 4)).clamp_min(1e-6)[..., None]
    return torch.cat([counts / total, torch.log1p(counts)], -1)
