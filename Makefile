# Two commands do all the set-up on a fresh machine:
#   make run    -> installs (once) and runs the DVC pipeline on the embedded phantom data
#   make test   -> installs (once) and runs lint + the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test bench clean-venv

setup: $(STAMP)

# torch is installed first and pinned, so pip never resolves a bare `torch` to multi-GB CUDA wheels.
# Every other dependency is pinned by constraints.txt: the committed results depend on the library versions
# (the same code and seeds, installed afresh with unpinned dependencies, trained other weights than the committed run).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

run: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/ruff check pipeline tests benchmarks
	SEGPIPE_REQUIRE_OPTIONAL=1 $(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_training.py

clean-venv:
	rm -rf $(VENV)
