"""Tiny random-config CPU tests of the CTScribeModel contract, checkpoints and their loud failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chatapp.checkpoint import load_checkpoint, save_checkpoint
from chatapp.config import load_config
from chatapp.llm import IMAGE_PLACEHOLDER, embedded_model_dir, save_tiny_random_llm
from chatapp.model import CTScribeModel
from vision.errors import CheckpointError, ConfigError
from vision.registry import FINDING_NAMES
from vision.volume import CTVolume

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_llm_dir(weights_cache_dir, tmp_path_factory) -> Path:
    tok = embedded_model_dir("smollm2-135m-instruct", weights_cache_dir)  # converted once, cached across runs
    return save_tiny_random_llm(tmp_path_factory.mktemp("tinyllm"), tok)


def tiny_config(llm_dir: Path, *extra: str):
    return load_config(ROOT / "configs" / "tiny.yaml", [f"model.llm.name_or_path={llm_dir}", *extra])


@pytest.fixture(scope="session")
def tiny_model(tiny_llm_dir) -> CTScribeModel:
    torch.manual_seed(0)
    return CTScribeModel.from_config(tiny_config(tiny_llm_dir))


def _volume(seed: int = 0, shape=(40, 36, 30)) -> CTVolume:
    a = np.random.default_rng(seed).normal(-500, 300, shape).astype(np.float32)
    return CTVolume(a, (1.0, 1.0, 1.0), np.eye(4))


def test_contract_shapes(tiny_model):
    tokens = tiny_model.encode(_volume())
    assert tokens.shape == (64, 32)  # (32/8)^3 ViT tokens of width 32
    probs, cue = tiny_model.predict_findings(tokens)
    assert list(probs) == list(FINDING_NAMES) and all(0.0 <= p <= 1.0 for p in probs.values())
    assert cue.startswith("Diagnostic cues")
    assert tiny_model.visual_embeddings(tokens).shape == (8, 32)  # num_latents x llm hidden
    assert tiny_model.preset == "tiny"
    out = tiny_model.generate([{"role": "user", "content": "Describe the scan."}], tokens=tokens, max_new_tokens=4)
    assert isinstance(out, str)
    pieces = list(tiny_model.generate([{"role": "user", "content": "Hi"}], tokens=tokens, max_new_tokens=4,
                                      stream=True))
    assert all(isinstance(p, str) for p in pieces)


def test_visual_tokens_injected_at_placeholder(tiny_model):
    tokens = tiny_model.encode(_volume())
    msgs = [{"role": "user", "content": "What is seen?"}]
    with torch.no_grad():
        full = tiny_model.prompt_embeds(msgs, tokens)
        text_only = tiny_model.prompt_embeds(msgs, None)
    cue_len = len(tiny_model.llm.tokenizer(tiny_model.predict_findings(tokens)[1]).input_ids)
    assert full.shape[1] >= text_only.shape[1] + 8 + cue_len - 2  # 8 visual tokens + the cue sentence
    prepared = tiny_model.prepare_messages(msgs, "CUES", visual=True)
    assert prepared[0]["role"] == "system" and "CUES" in prepared[0]["content"]
    assert prepared[1]["content"].startswith(IMAGE_PLACEHOLDER)


def test_ablation_switches_change_the_prompt(tiny_llm_dir):
    tokens = torch.randn(64, 32)
    msgs = [{"role": "user", "content": "Report."}]
    lengths = {}
    for name, flags in {"full": ("true", "true"), "cues_only": ("false", "true"),
                        "visual_only": ("true", "false")}.items():
        torch.manual_seed(0)  # same bridge → same cue text in every variant
        m = CTScribeModel.from_config(tiny_config(tiny_llm_dir, f"model.prototypes.use_visual_tokens={flags[0]}",
                                                  f"model.prototypes.use_cues={flags[1]}"))
        with torch.no_grad():
            lengths[name] = m.prompt_embeds(msgs, tokens).shape[1]
    assert lengths["full"] - lengths["cues_only"] == 8 + 1  # the 8 latents (+ the newline after the placeholder)
    assert lengths["visual_only"] < lengths["full"]


def test_save_load_roundtrip_bit_for_bit(tiny_model, tiny_llm_dir, tmp_path):
    ckpt = save_checkpoint(tiny_model, tmp_path / "ck", weights_label="unit-test")
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["arch"]["preset"] == "tiny" and meta["labels"] == list(FINDING_NAMES)
    assert "torch" in meta["versions"]
    torch.manual_seed(123)  # different random init before loading
    loaded = CTScribeModel.from_config(tiny_config(tiny_llm_dir, f"model.checkpoint={ckpt}"))
    assert loaded.weights_label == "unit-test"
    for (k, a), (k2, b) in zip(tiny_model.bridge.state_dict().items(), loaded.bridge.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    for (k, a), b in zip(tiny_model.encoder.state_dict().items(), loaded.encoder.state_dict().values()):
        assert torch.equal(a, b), k
    t = tiny_model.encode(_volume(1))
    assert tiny_model.predict_findings(t) == loaded.predict_findings(t)


def _corrupt(ckpt: Path, part: str, fn) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(ckpt / f"{part}.safetensors"))
    save_file(fn(sd), str(ckpt / f"{part}.safetensors"))


def test_loud_failures(tiny_model, tiny_llm_dir, tmp_path):
    ok = save_checkpoint(tiny_model, tmp_path / "ok")

    missing = save_checkpoint(tiny_model, tmp_path / "missing")
    _corrupt(missing, "bridge", lambda sd: {k: v for k, v in sd.items() if k != "latents"})
    with pytest.raises(CheckpointError, match="missing keys.*latents"):
        load_checkpoint(missing).apply(tiny_model)

    extra = save_checkpoint(tiny_model, tmp_path / "extra")
    _corrupt(extra, "prototypes", lambda sd: {**sd, "surprise": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected keys.*surprise"):
        load_checkpoint(extra).apply(tiny_model)

    pickled = save_checkpoint(tiny_model, tmp_path / "pickled")
    torch.save({"x": torch.zeros(1)}, pickled / "bridge.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(pickled)

    with pytest.raises(CheckpointError, match="preprocessing mismatch"):  # trained on 'tiny', config asks 'astra'
        CTScribeModel.from_config(tiny_config(tiny_llm_dir, f"model.checkpoint={ok}", "model.encoder.preset=astra"))

    with pytest.raises(CheckpointError, match="token set mismatch"):  # trained on one token group, config asks two
        CTScribeModel.from_config(tiny_config(tiny_llm_dir, f"model.checkpoint={ok}",
                                              "model.encoder.tokens=[layer4, layer3]"))

    meta = json.loads((ok / "config.json").read_text())
    meta["arch"]["preset_params"]["hu_window"] = [-1000, 400]  # same name, different preprocessing
    drift = tmp_path / "drift"
    save_checkpoint(tiny_model, drift)
    (drift / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="preprocessing mismatch"):
        CTScribeModel.from_config(tiny_config(tiny_llm_dir, f"model.checkpoint={drift}"))

    with pytest.raises(CheckpointError, match="does not exist"):
        CTScribeModel.from_config(tiny_config(tiny_llm_dir, f"model.checkpoint={tmp_path / 'nope'}"))
    with pytest.raises(ConfigError, match="preset"):
        CTScribeModel.from_config(tiny_config(tiny_llm_dir, "model.encoder.preset=unknown-preset"))


def test_region_tokens_through_encode(tiny_llm_dir, tmp_path):
    """model.encoder.tokens ending with 'regions': masks follow the preset's crop + resize, and the feature cache key
    includes them (same volume, other masks → other tokens, never a stale hit)."""
    from test_encoder_tokens import _StandInI3

    from vision.encoder import AstraEncoder, FeatureCache
    from vision.registry import REGION_KEYS

    m = CTScribeModel.from_config(tiny_config(tiny_llm_dir))
    assert not m.needs_regions
    m.encoder = AstraEncoder(None, ("layer4", "layer3", "regions"), net=_StandInI3())
    m._cache = FeatureCache(tmp_path, "ns")
    assert m.needs_regions
    a = np.full((40, 36, 30), -1000.0, np.float32)
    a[4:36, 2:34, 6:30] = np.random.default_rng(0).normal(0, 300, (32, 32, 24))  # body: crop box (4:36, 2:34, 6:30)
    vol = CTVolume(a, (1.0, 1.0, 1.0), np.eye(4))
    left = np.zeros(a.shape, bool)
    left[4:20, 2:34, 6:30] = True  # the first half of the crop box along X
    w = m.region_inputs(vol, {"lung": left})  # missing regions are empty
    assert w.shape == (len(REGION_KEYS), 32, 32, 32)
    assert w[0, :16].min() == 1 and w[0, 16:].max() == 0 and not w[1:].any()
    t1 = m.encode(vol, {"lung": left})
    assert t1.shape == (2 + 16 + 10, 2048)  # stand-in layer4 grid (2, 1, 1), layer3 grid (4, 2, 2), 10 regions
    assert t1[18].any() and not t1[19:].any()
    t2 = m.encode(vol, {"lung": ~left})
    assert len(list(m._cache.dir.iterdir())) == 2 and not torch.equal(t1[18], t2[18])
    assert torch.equal(t1[:18], t2[:18]) and torch.equal(m.encode(vol, {"lung": left}), t1)  # cache hit
    with pytest.raises(ConfigError, match="volume grid"):
        m.region_inputs(vol, {"lung": left[:-1]})


def test_region_inputs_area_resize_matches_torch():
    """The separable area resize equals F.interpolate(area) of the cropped mask, from the volume grid or from a coarse
    work grid (nearest-upsampled by integer factors, as vision.regions keeps classical masks)."""
    import torch.nn.functional as F

    from chatapp.model import _area_resize
    from vision.regions_ops import upsample_nearest

    rng = np.random.default_rng(0)
    work = rng.random((9, 7, 5)) > 0.6
    full = upsample_nearest(work, (3, 4, 2), (26, 27, 10))
    box, size = [(2, 25), (1, 27), (3, 9)], [8, 12, 7]  # down- and upsampling axes
    ref = F.interpolate(torch.from_numpy(full[2:25, 1:27, 3:9].astype(np.float32))[None, None], size=size,
                        mode="area")[0, 0].numpy()
    assert np.allclose(_area_resize(full, box, size, (1, 1, 1)), ref, atol=1e-5)
    assert np.allclose(_area_resize(work, box, size, (3, 4, 2)), ref, atol=1e-5)


def test_demo_checkpoint_token_set_matches_its_prototypes():
    """The shipped demo checkpoint records the token set its prototype memory was fitted on; with region tokens the
    memory file carries the region head, and the memory loads strictly (no Astra weights needed for this check)."""
    from safetensors.torch import load_file

    from chatapp.model import DEMO_CHECKPOINT
    from vision.encoder import REGION_ENTRIES, num_region_tokens
    from vision.prototypes import PrototypeMemory

    meta = json.loads((DEMO_CHECKPOINT / "config.json").read_text())
    tokens = meta["arch"]["encoder"]["tokens"]
    assert tokens == meta["train"]["prototypes"]["tokens"]
    sd = load_file(str(DEMO_CHECKPOINT / "prototypes.safetensors"))
    regions = num_region_tokens() if tokens[-1] in REGION_ENTRIES else 0
    assert ("region_head.weight" in sd) == bool(regions)
    a = meta["arch"]["prototypes_arch"]
    mem = PrototypeMemory(2048, width=a["width"], prototypes_per_class=a["per_class"], temperature=a["temperature"],
                          region_tokens=regions)
    mem.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    if regions:  # the head's clipped inputs bound its logits on any CT
        worst = torch.full((1, regions, 2048), 1e6)
        assert mem.region_logits(worst).abs().max() < 1e3
