"""The Astra encoder's multi-scale token set (model.encoder.tokens): shapes, pooling, cache namespace, loud mismatch.

A stand-in network with the I3ResNet stage names and channel counts replaces the 224 MiB pretrained one, so these
tests run in about a second; the real encoder is covered by the slow test in test_encoder.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chatapp.model import check_token_set
from vision.encoder import AstraEncoder, build_encoder, token_layers
from vision.errors import CheckpointError, ConfigError


class _StandInI3(nn.Module):
    """Same stage names, channels and strides as I3ResNet152 (input (B, 1, X, Y, Z) → layer4 (B, 2048, z, x, y))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv3d(3, 64, 1, stride=(1, 2, 2))
        self.layer1 = nn.Conv3d(64, 256, 1, stride=2)
        self.layer2 = nn.Conv3d(256, 512, 1, stride=2)
        self.layer3 = nn.Conv3d(512, 1024, 1, stride=2)
        self.layer4 = nn.Conv3d(1024, 2048, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 1, 4, 2, 3).repeat(1, 3, 1, 1, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def _encoder(tokens) -> AstraEncoder:
    return AstraEncoder(None, token_layers({"tokens": tokens}), net=_StandInI3())


def test_token_set_shapes_and_pooling():
    x = torch.rand(2, 1, 64, 64, 32)  # layer3 grid (z, x, y) = (4, 4, 4), layer4 grid (2, 2, 2)
    single = _encoder(None)
    multi = _encoder(["layer4", "layer3", "layer2"])
    t1, t3 = single(x), multi(x)
    assert t1.shape == (2, 8, 2048)
    assert t3.shape == (2, 8 + 64 + 64, 2048)  # layer4 first, then layer3 and layer2 on the layer3 grid
    assert torch.equal(multi.bridge_tokens(t3), t1)  # the bridge still sees exactly the layer4 tokens
    assert torch.equal(single.bridge_tokens(t1), t1)
    net = multi.net  # recompute the extra groups independently
    h = net.stem(x.permute(0, 1, 4, 2, 3).repeat(1, 3, 1, 1, 1))
    l2 = net.layer2(net.layer1(h))
    l3 = net.layer3(l2)
    g3 = torch.cat([l3, l3], 1).flatten(2).transpose(1, 2)  # layer3 on its own grid: mean = max = itself
    assert torch.allclose(t3[:, 8:72], g3, atol=1e-5)
    g2 = torch.cat([F.avg_pool3d(l2, 2), F.max_pool3d(l2, 2)], 1).flatten(2).transpose(1, 2)  # 1024 wide
    assert torch.allclose(t3[:, 72:, :1024], g2, atol=1e-5)
    assert not t3[:, 72:, 1024:].any()  # zero-padded to the token width
    assert multi(x[:1]).shape == (1, 136, 2048)  # hooks do not leak between calls
    with pytest.raises(CheckpointError, match="another model.encoder.tokens"):
        multi.bridge_tokens(t3[:, :100])


def test_token_set_validation_and_cache_namespace():
    assert token_layers({}) == ("layer4",) and token_layers({"tokens": "layer4"}) == ("layer4",)
    for bad in (["layer3"], ["layer4", "layer9"], ["layer4", "layer3", "layer3"]):
        with pytest.raises(ConfigError, match="model.encoder.tokens"):
            token_layers({"tokens": bad})
    with pytest.raises(ConfigError, match="vit"):
        build_encoder({"kind": "vit", "tokens": ["layer4", "layer3"]}, None, (32, 32, 32))
    # the feature cache is keyed by weights_id: old layer4-only entries keep their namespace, new sets get their own
    assert _encoder(None).weights_id == AstraEncoder.weights_id
    ids = {_encoder(t).weights_id for t in (None, ["layer4", "layer3"], ["layer4", "layer3", "layer2"])}
    assert len(ids) == 3
    enc = _encoder(["layer4", "layer3"])  # switching sets (bench/train_prototypes.py --tokens) leaves no stale hook
    enc.set_tokens(("layer4",))
    assert enc.weights_id == AstraEncoder.weights_id and not enc.net.layer3._forward_hooks
    assert enc(torch.rand(1, 1, 64, 64, 32)).shape == (1, 8, 2048)


def test_checkpoint_token_set_mismatch_is_loud(tmp_path):
    ckpt = {"kind": "astra", "tokens": ["layer4", "layer3"]}
    check_token_set(ckpt, {"tokens": None}, tmp_path)  # null → the checkpoint's own set
    check_token_set(ckpt, {"tokens": ["layer4", "layer3"]}, tmp_path)
    with pytest.raises(CheckpointError, match="token set mismatch"):
        check_token_set(ckpt, {"tokens": ["layer4"]}, tmp_path)
    with pytest.raises(CheckpointError, match="token set mismatch"):  # an old checkpoint (no tokens key) is layer4
        check_token_set({"kind": "astra"}, {"tokens": ["layer4", "layer3"]}, tmp_path)


def _region_masks(b: int, shape=(64, 64, 32)) -> torch.Tensor:
    """(B, 10, X, Y, Z) soft masks: region r is a slab along X (regions 8 and 9 stay empty)."""
    m = torch.zeros(b, 10, *shape)
    for r in range(8):
        m[:, r, r * 8:(r + 1) * 8] = 1.0
    return m


def test_region_tokens_shapes_pooling_and_loud_failures():
    from vision.encoder import REGION_TOKENS, num_region_tokens, region_pool

    assert num_region_tokens() == 10
    enc = _encoder(["layer4", "layer3", REGION_TOKENS])
    x, masks = torch.rand(2, 1, 64, 64, 32), _region_masks(2)
    t = enc(x, masks)
    assert t.shape == (2, 8 + 64 + 10, 2048) and enc.extra_tokens == 10
    assert torch.equal(enc.bridge_tokens(t), _encoder(None)(x))  # the bridge still reads layer4 only
    assert torch.allclose(t[:, :72], _encoder(["layer4", "layer3"])(x))  # grid tokens unchanged by the regions
    net = enc.net  # recompute region 2 independently: masked mean and max of layer1 (max-pooled by 2) and layer2
    l1 = net.layer1(net.stem(x.permute(0, 1, 4, 2, 3).repeat(1, 3, 1, 1, 1)))
    l2 = net.layer2(l1)
    l1 = F.max_pool3d(l1, 2)
    cells = (slice(None), slice(None), slice(None), slice(2, 3))  # X 16..24 → layer2 x cell 2 (grid (z, x, y))
    want = torch.cat([l1[cells].mean((2, 3, 4)), l1[cells].amax((2, 3, 4)), l2[cells].mean((2, 3, 4)),
                      l2[cells].amax((2, 3, 4))], 1)
    assert torch.allclose(t[:, 72 + 2, :1536], want, atol=1e-4)
    assert not t[:, 72:, 1536:].any()  # zero-padded to the token width
    assert not t[:, 72 + 8:].any()  # an empty region gives a zero token
    assert not t[:, 72 + 2].equal(t[:, 72 + 3])
    # a soft mask weights the mean; the max covers every cell the region touches
    f = torch.arange(4.0).reshape(1, 1, 1, 1, 4)
    w = torch.tensor([0.0, 0.5, 1.0, 0.0]).reshape(1, 1, 1, 1, 4)
    assert region_pool(f, w).flatten().tolist() == pytest.approx([(0.5 + 2.0) / 1.5, 2.0])
    with pytest.raises(ConfigError, match="needs region masks"):
        enc(x)
    with pytest.raises(ConfigError, match="needs region masks"):
        enc(x, masks[:, :9])
    with pytest.raises(CheckpointError, match="another model.encoder.tokens"):
        enc.bridge_tokens(t[:, :80])
    # validation and cache namespace: 'regions' only last, after layer4; its own weights_id
    assert token_layers({"tokens": ["layer4", REGION_TOKENS]}) == ("layer4", REGION_TOKENS)
    for bad in ([REGION_TOKENS], ["layer4", REGION_TOKENS, "layer3"], ["layer3", REGION_TOKENS]):
        with pytest.raises(ConfigError, match="model.encoder.tokens"):
            token_layers({"tokens": bad})
    assert enc.weights_id not in {_encoder(s).weights_id for s in (None, ["layer4", "layer3"])}
    enc.set_tokens(("layer4",))  # switching back removes the layer1/layer2 hooks
    assert not enc.net.layer1._forward_hooks and not enc.net.layer2._forward_hooks and enc.extra_tokens == 0


def test_regions_hu_tokens_add_region_statistics_in_the_free_channels():
    """``regions_hu``: the same region tokens with vision.region_stats in channels 1536.. (same token count, its own
    cache namespace, one channel group per origin for the region head)."""
    from vision.encoder import REGION_HU_TOKENS, REGION_TOKENS, region_channel_groups
    from vision.region_stats import region_statistics, region_stats_dim

    x, masks = torch.rand(2, 1, 64, 64, 32), _region_masks(2)
    plain = _encoder(["layer4", "layer3", REGION_TOKENS])
    enc = _encoder(["layer4", "layer3", REGION_HU_TOKENS])
    t, t0 = enc(x, masks), plain(x, masks)
    f = region_stats_dim()
    assert t.shape == t0.shape == (2, 82, 2048) and enc.extra_tokens == 10 and enc.region_tokens
    assert torch.equal(t[:, :, :1536], t0[:, :, :1536])  # deep part and grid tokens unchanged
    assert torch.allclose(t[:, 72:, 1536:1536 + f], region_statistics(x, masks), atol=1e-5)
    assert t[:, 72:80, 1536:1536 + f].abs().sum() > 0 and not t[:, 72:, 1536 + f:].any()
    assert not t[:, 80:].any()  # empty regions stay zero tokens
    assert region_channel_groups(REGION_TOKENS) == ((0, 1536),)
    assert region_channel_groups(REGION_HU_TOKENS) == ((0, 1536), (1536, 1536 + f))
    assert enc.weights_id != plain.weights_id  # cached features of the two sets never mix
    with pytest.raises(ConfigError, match="regions_hu"):
        enc(x)
    with pytest.raises(ConfigError, match="model.encoder.tokens"):
        token_layers({"tokens": ["layer4", REGION_HU_TOKENS, REGION_TOKENS]})
