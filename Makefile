# ctscribe: `make run` sets up and starts the app on the embedded default (offline); `make test` sets up and tests.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.base-installed
DEV_STAMP := $(VENV)/.dev-installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export ANONYMIZED_TELEMETRY := False
export TOKENIZERS_PARALLELISM := false
# OpenMP threads sleep instead of spinning while they wait: on a busy 2-core machine (other processes, or the app's
# own threads) spinning made torch 3-20x slower (bench/analysis.md); results are unchanged
export OMP_WAIT_POLICY := PASSIVE

.PHONY: run test install install-dev browser-deps demo bench lint llamacpp

$(BASE_STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch drags in a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(DEV_STAMP): $(BASE_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Optional llama.cpp text backend (model.llm.text_backend). Portable x86-64 build: no -march=native (a native build
# segfaults on VMs that report AMX), AVX2/FMA/F16C like the torch CPU wheel; no curl (never downloads models).
LLAMACPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF
llamacpp: $(BASE_STAMP) requirements-llamacpp.txt
	CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PY) -m pip install --quiet -r requirements-llamacpp.txt

install: $(BASE_STAMP)
install-dev: $(DEV_STAMP) browser-deps

# Debian Chromium for the real-browser tests (Playwright cannot download browsers offline).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "WARNING: chromium not installed; browser tests will skip"; \
	  else echo "WARNING: chromium missing (sudo apt-get install chromium); browser tests will skip"; fi; }

run: $(BASE_STAMP)
	$(VENV)/bin/ctscribe serve

demo: $(BASE_STAMP)
	$(VENV)/bin/ctscribe demo --out demo-output

test: install-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider --durations=30

bench: install-dev
	$(PY) -m bench.run

lint: install-dev
	$(VENV)/bin/ruff check .
