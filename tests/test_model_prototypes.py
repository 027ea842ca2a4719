"""The disease prototype memory learns separable findings (CI-sized version of the phantom AUROC check)."""

from __future__ import annotations

import torch
from sklearn.metrics import roc_auc_score

from vision.prototypes import PrototypeMemory, cue_text
from vision.registry import FINDING_NAMES

K = len(FINDING_NAMES)


def _data(n: int, g: torch.Generator, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (n, 16, 32): noise, plus finding k's pattern added to ~1/4 of the tokens when k is present (P = 0.3)."""
    y = (torch.rand(n, K, generator=g) < 0.3).float()
    where = (torch.rand(n, K, 16, generator=g) < 0.25).float() * y[:, :, None]  # (n, K, tokens)
    x = torch.randn(n, 16, 32, generator=g) + torch.einsum("nkt,kd->ntd", where, patterns)
    return x, y


def test_prototypes_learn_findings_auroc():
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(K, 32, generator=g) * 1.5
    xtr, ytr = _data(256, g, patterns)
    xte, yte = _data(200, g, patterns)
    torch.manual_seed(0)
    mem = PrototypeMemory(32, width=32, prototypes_per_class=2)
    opt = torch.optim.AdamW(mem.parameters(), lr=3e-3)
    first = None
    for step in range(100):
        idx = torch.randint(0, 256, (32,), generator=g)
        loss = mem.loss(xtr[idx], ytr[idx])
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    with torch.no_grad():
        p = torch.sigmoid(mem(xte))
    aucs = [roc_auc_score(yte[:, k], p[:, k]) for k in range(K) if 0 < yte[:, k].sum() < len(yte)]
    assert sum(aucs) / len(aucs) >= 0.9, aucs
    # unknown labels (NaN) are ignored by the loss rather than poisoning it
    y_nan = ytr[:4].clone()
    y_nan[:, 0] = float("nan")
    assert torch.isfinite(mem.loss(xtr[:4], y_nan))


def test_cue_text_lists_likely_and_possible():
    probs = {n: 0.05 for n in FINDING_NAMES}
    probs["Emphysema"], probs["Lung nodule"] = 0.91, 0.4
    text = cue_text(probs)
    assert "likely present: Emphysema (0.91)" in text and "possible: Lung nodule (0.40)" in text
    assert "Cardiomegaly" not in text
    assert "likely present: none" in cue_text({n: 0.0 for n in FINDING_NAMES})


def test_region_head_reads_the_last_tokens_and_is_fitted_by_stacking():
    """With region_tokens=R the attention sees only the first N-R tokens and a linear head reads the last R; a finding
    visible only in a region token is learnt by fit_region_head (head on train, mix on validation)."""
    import sys
    from pathlib import Path

    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from train_prototypes import fit_region_head, macro_auroc

    g = torch.Generator().manual_seed(0)
    n, r, d = 400, 3, 32
    y = (torch.rand(n, K, generator=g) < 0.3).float()
    x = torch.randn(n, 8 + r, d, generator=g)
    x[:, 8 + 1, :K] += 3.0 * y  # finding k shows only in region token 1, feature k
    items = [{"x": x[i], "labels": y[i]} for i in range(n)]
    torch.manual_seed(0)
    mem = PrototypeMemory(d, width=8, prototypes_per_class=2, region_tokens=r)
    assert {"region_head.weight", "region_mean", "region_scale", "memory_scale"} <= set(mem.state_dict())
    before = mem(x[:4])
    x2 = x[:4].clone()
    x2[:, 8:] += 5.0
    assert torch.equal(mem(x2), before)  # zero-initialised head: region tokens do not reach the prototype part
    x3 = x[:4].clone()
    x3[:, :8] += 1.0
    assert not torch.equal(mem(x3), before)
    assert mem.split(x[:4])[0].shape == (4, 8, d)
    with pytest.raises(ValueError, match="region tokens"):
        mem(torch.randn(2, r, d))
    res = fit_region_head(mem, items[:260], items[260:340])
    auc, _ = macro_auroc(mem, items[340:])
    assert auc > 0.9 and len(res["l2"]) == 1 and res["l2"][0] in (0.01, 0.02, 0.05, 0.15, 0.5, 1.5)
    assert torch.isfinite(mem.loss(x[:8], y[:8]))


def test_region_head_channel_groups_get_their_own_penalty():
    """With channel groups (``regions_hu``: deep block, then statistics), each group gets its own head and penalty
    and the mix folds them into the one linear head: findings carried by 2 channels of a small group beside 192
    noise channels are learnt much better than under one shared penalty."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from train_prototypes import fit_region_head, macro_auroc

    g = torch.Generator().manual_seed(1)
    n, r, d = 400, 2, 200
    y = (torch.rand(n, K, generator=g) < 0.3).float()
    x = torch.randn(n, 8 + r, d, generator=g)
    x[:, 8, 192:194] += 2.0 * y[:, :2]  # findings 0 and 1 show only in the second group (channels 192..199)
    items = [{"x": x[i], "labels": y[i]} for i in range(n)]
    aucs = []
    for groups in (None, ((0, 192), (192, 200))):
        torch.manual_seed(0)
        mem = PrototypeMemory(d, width=8, prototypes_per_class=2, region_tokens=r)
        res = fit_region_head(mem, items[:260], items[260:340], groups=groups)
        _, per = macro_auroc(mem, items[340:])
        aucs.append((per[0] + per[1]) / 2)
    assert len(res["l2"]) == 2 and len(res["head_scale"]) == 2
    assert aucs[1] > 0.8 and aucs[1] > aucs[0] + 0.1  # seed 1: 0.67 with one shared penalty, 0.89 with groups


def test_region_novelty_counts_features_beyond_three_training_sds():
    """PrototypeMemory.region_novelty: the share of fitted (non-constant) region features more than 3 SD from the
    training mean; padding features (scale left at 1, mean 0) never count."""
    mem = PrototypeMemory(8, width=4, prototypes_per_class=1, region_tokens=2)
    with torch.no_grad():
        mem.region_mean.zero_()
        mem.region_scale.fill_(0.5)
        mem.region_scale[:, 6:] = 1.0  # two padding channels per region
    x = torch.zeros(2, 5 + 2, 8)
    x[1, 5, :3] = 2.0  # 3 of the 12 live features at 4 SD
    x[1, 6, 6:] = 50.0  # padding channels: ignored
    assert mem.region_novelty(mem.split(x)[1]).tolist() == [0.0, 0.25]


def test_head_phantom_sets_and_the_recorded_command():
    """--head-* options repeat once per extra phantom set (the k-th of each kind together; a set without its own
    geometry is rendered at the report geometry) and the command recorded in the checkpoint rebuilds them."""
    import argparse
    import shlex
    import sys
    from pathlib import Path

    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from train_prototypes import REPORT_SHAPE, REPORT_SPACING, command_line, head_sets

    ns = argparse.Namespace(checkpoint="ck", seed=0, n=403, region_l2=[0.001, 0.003], tokens="layer4,layer3",
                            head_seed=[400000, 300000], head_n=[800, 600], head_shape=[[96, 96, 64]],
                            head_spacing=[[3.6, 3.6, 5.0]], write=True, index=[])
    assert head_sets(ns) == [(400000, 800, (96, 96, 64), (3.6, 3.6, 5.0)), (300000, 600, REPORT_SHAPE, REPORT_SPACING)]
    cmd = command_line(ns)
    assert cmd.endswith("--write") and "--region-l2 0.001 0.003" in cmd
    argv = shlex.split(cmd)
    assert argv.count("--head-seed") == 2 and argv[argv.index("--head-shape") + 1:][:3] == ["96", "96", "64"]
    with pytest.raises(SystemExit, match="--head-n"):
        head_sets(argparse.Namespace(head_seed=[1, 2], head_n=[5], head_shape=None, head_spacing=None))
