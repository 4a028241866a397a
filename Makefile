# Set-up is part of each target: a fresh clone needs only `make sweep` or `make test`.
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
	# Two workers (a test file each at a time): compiling dominates and is single-threaded.
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadfile

# The main job: the layer-contribution sweep on the shipped tiny model (resumable: a second
# run skips finished runs). Outputs in runs/sweep_tiny/.
sweep: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/jaxlayer sweep --config configs/sweep_tiny.py

.PHONY: install test sweep
