"""LLM loading: local HF-format directories (tiny random model), bitsandbytes 4-bit nf4 on CPU, LoRA, streaming."""

from __future__ import annotations

import pytest
import torch
from test_model import tiny_llm_dir  # noqa: F401  (session fixture)

from chatapp.llm import IMAGE_PLACEHOLDER, load_llm
from vision.errors import CheckpointError, ConfigError


def test_4bit_nf4_load_on_cpu(weights_cache_dir, tmp_path):
    import bitsandbytes as bnb

    from chatapp.llm import embedded_model_dir, save_tiny_random_llm

    # bnb's CPU 4-bit kernels quantize in blocks of 64 input features: hidden 64 is the smallest that works
    d = save_tiny_random_llm(tmp_path / "llm64", embedded_model_dir("smollm2-135m-instruct", weights_cache_dir),
                             hidden_size=64)
    llm = load_llm({"name_or_path": str(d), "quantization": "4bit", "device": "cpu", "max_new_tokens": 4}, tmp_path)
    layers = [m for m in llm.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and layers[0].weight.quant_type == "nf4"
    assert isinstance(llm.generate([{"role": "user", "content": "Hello"}]), str)


def test_lora_and_visual_injection(tiny_llm_dir):  # noqa: F811
    llm = load_llm({"name_or_path": str(tiny_llm_dir), "quantization": "none", "device": "cpu",
                    "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}, tiny_llm_dir)
    assert llm.lora_params and not any(p.requires_grad for p in llm.lora_params)  # frozen until a stage trains it
    n_lora = sum(p.numel() for p in llm.lora_params)
    assert n_lora == 2 * 2 * 4 * (32 + 32) - 2 * 4 * 16  # 2 layers x (q: 32->32, v: 32->16 with 2 kv heads)
    text = llm.render([{"role": "user", "content": f"{IMAGE_PLACEHOLDER} what?"}])
    visual = torch.randn(5, 32)
    with_img = llm.embed_prompt(text, visual)
    without = llm.embed_prompt(text.replace(IMAGE_PLACEHOLDER, ""))
    assert with_img.shape[1] == without.shape[1] + 5
    assert torch.equal(with_img[0][(with_img[0] == visual[0]).all(-1)][0], visual[0])
    pieces = list(llm.stream([], inputs_embeds=with_img, max_new_tokens=3))
    assert all(isinstance(p, str) for p in pieces)
    with pytest.raises(ConfigError, match="placeholder"):
        llm.embed_prompt("no placeholder here", visual)


def test_bad_llm_settings_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="quantization"):
        load_llm({"name_or_path": str(tmp_path), "quantization": "3bit"}, tmp_path)
    with pytest.raises(CheckpointError, match="offline"):
        load_llm({"name_or_path": "no-such-org/no-such-model", "quantization": "none", "device": "cpu"}, tmp_path)
