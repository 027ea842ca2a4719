"""vision.region_stats: closed-form Hessian eigenvalues, shape maps and region exceedance counts."""

from __future__ import annotations

import math

import torch

from vision.region_stats import (
    HESSIAN_SIGMAS,
    HU_LEVELS,
    SHAPE_LEVELS,
    TOPHAT_LEVELS,
    gaussian_smooth,
    hessian_eigenvalues,
    region_statistics,
    region_stats_dim,
)


def _ball_and_tube(n: int = 32) -> torch.Tensor:
    """(1, 1, n, n, n): a 5-voxel ball at (8, 8, 16) and a tube of radius 1.5 along Z at (24, 24)."""
    i = torch.arange(n, dtype=torch.float32)
    X, Y, Z = torch.meshgrid(i, i, i, indexing="ij")
    ball = ((X - 8) ** 2 + (Y - 8) ** 2 + (Z - 16) ** 2) <= 2.5 ** 2
    tube = ((X - 24) ** 2 + (Y - 24) ** 2) <= 1.5 ** 2
    return (0.2 + 0.6 * (ball | tube).float())[None, None]


def test_closed_form_eigenvalues_match_eigvalsh():
    torch.manual_seed(0)
    x = gaussian_smooth(torch.rand(1, 1, 20, 18, 16), 1.5)
    for sigma in (0.7, 1.5):
        got = hessian_eigenvalues(x, sigma)
        xs = gaussian_smooth(x, sigma)[:, 0]
        g = torch.gradient(xs, dim=(1, 2, 3))
        h = torch.stack([torch.stack(torch.gradient(gi, dim=(1, 2, 3)), -1) for gi in g], -2) * sigma ** 2
        want = torch.linalg.eigvalsh(0.5 * (h + h.transpose(-1, -2)))
        assert torch.allclose(got, want, atol=1e-5 * float(want.abs().max()) + 1e-7)
        assert (got[..., 0] <= got[..., 1] + 1e-7).all() and (got[..., 1] <= got[..., 2] + 1e-7).all()


def test_blobness_finds_the_ball_and_not_the_tube():
    x = _ball_and_tube()
    e = hessian_eigenvalues(x, 1.0)[0]
    blob = (-e[..., 2]).clamp_min(0)
    assert blob[8, 8, 16] > 0.05 and blob[24, 24, 16].abs() < 0.01  # all three curvatures negative only in the ball
    assert -e[24, 24, 16, 1] > 0.05  # the tube bends across its axis


def test_region_counts_shares_and_layout():
    x = _ball_and_tube()
    m = torch.zeros(1, 3, 32, 32, 32)
    m[:, 0, :16, :16] = 1.0  # region 0 holds the ball
    m[:, 1, 16:, 16:] = 1.0  # region 1 the tube; region 2 is empty
    f = region_statistics(x, m)[0]
    d = region_stats_dim()
    assert f.shape == (3, d) and d == 2 * (HU_LEVELS + 2 * len(TOPHAT_LEVELS)
                                           + 2 * len(HESSIAN_SIGMAS) * len(SHAPE_LEVELS))
    half = d // 2
    assert not f[2].any()
    # level 0 of x: every voxel counts (x > 0): share 1, log count = log1p(region voxels)
    assert math.isclose(float(f[0, 0]), 1.0) and math.isclose(float(f[0, half]), math.log1p(16 * 16 * 32), rel_tol=1e-5)
    bright = HU_LEVELS - 1  # x > 23/24: nothing here (the structures are 0.8)
    assert float(f[0, bright]) == 0.0
    blob0 = HU_LEVELS + 2 * len(TOPHAT_LEVELS)  # first blobness level at the first sigma
    assert f[0, blob0] > f[1, blob0]  # the ball region has more blob voxels than the tube region


def test_fast_paths_equal_the_plain_definitions():
    """The separable dilation equals max_pool3d; the histogram-based counts equal comparing every voxel with every
    level (strictly greater; ties at a level do not count)."""
    import torch.nn.functional as F

    from vision.region_stats import _dilate, exceedance_counts

    torch.manual_seed(0)
    x = torch.rand(2, 1, 12, 10, 8)
    assert torch.equal(_dilate(x), F.max_pool3d(x, 3, 1, 1)) and torch.equal(-_dilate(-x), -F.max_pool3d(-x, 3, 1, 1))
    v = torch.round(x[:, 0] * 8) / 8  # many values exactly on a level
    w = torch.rand(2, 3, 12, 10, 8)
    lv = torch.arange(8) / 8
    want = torch.einsum("blxyz,brxyz->brl", (v[:, None] > lv.view(1, -1, 1, 1, 1)).float(), w)
    assert torch.allclose(exceedance_counts(v, lv, w), want, atol=1e-4)
