# Set-up is part of each target: a fresh clone needs only `make test` or `make demo`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from the CPU wheel, so that no later package pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

test: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Until the layer sweep lands: greedy generation with a random tiny checkpoint.
demo: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m tests.hf_fixtures /tmp/jaxlayer-demo
	HF_HUB_OFFLINE=1 $(BIN)/jaxlayer generate --model /tmp/jaxlayer-demo --prompt "the quick brown"

.PHONY: install test demo
