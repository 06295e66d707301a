"""Mutant ``i`` of a seed: a parent, a few weighted mutations (or byte damage), and the
``compile`` and ``analyze`` arguments to run it with -- a pure function of ``(seed, i)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxforge.fuzz.casefiles import MODEL
from onnxforge.fuzz.datamutations import mutate_bytes, mutate_external, mutate_tensor_data, mutate_values
from onnxforge.fuzz.mutations import (
    NotApplicable,
    _pick,
    mutate_attribute,
    mutate_cycle,
    mutate_dims,
    mutate_dtype,
    mutate_field,
    mutate_metadata,
    mutate_names,
    mutate_structure,
    mutate_versions,
)
from onnxforge.fuzz.parents import Parent
from onnxforge.fuzz.protowalk import _nodes

CORPUS_WEIGHT = 0.25  # share of mutants taken from corpus models when some are present


PROTO_MUTATORS: tuple[tuple[str, Callable[..., str], float], ...] = (
    ("field", mutate_field, 5.0),
    ("dims", mutate_dims, 2.0),
    ("dtype", mutate_dtype, 1.5),
    ("attribute", mutate_attribute, 2.5),
    ("names", mutate_names, 1.5),
    ("cycle", mutate_cycle, 0.7),
    ("structure", mutate_structure, 1.5),
    ("versions", mutate_versions, 0.7),
    ("tensor_data", mutate_tensor_data, 1.2),
    ("values", mutate_values, 2.5),
    ("external", mutate_external, 2.0),
    ("metadata", mutate_metadata, 0.4),
)


@dataclass
class Mutant:
    index: int
    parent: str
    files: dict[str, Any]  # name -> bytes | Symlink | Folder; MODEL is the model
    mutations: list[str]
    compile_args: list[str]
    analyze_args: list[str]


COMPILE_VARIANTS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 4.0),  # the default optimize pipeline
    (("--pipeline", "lossless", "--no-cost"), 2.0),
    (("--target", "cpu"), 2.0),
    (("--target", "cpu-native"), 1.0),
    (("--verify",), 1.0),
    (("--external-data", "always"), 1.0),
    (("--pipeline", "lossless", "--check-ir", "--no-cost"), 1.0),
    (("--target", "tensorrt", "--report", "@OUT/report.json"), 0.5),
)


ANALYZE_VARIANTS: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 3.0),
    (("--json",), 1.0),
    (("--no-probe",), 2.0),
    (("--target", "h100", "--top", "3"), 1.0),
)


def _weighted(rng: np.random.Generator, items: Sequence[tuple[Any, ...]]) -> Any:
    w = np.array([it[-1] for it in items], dtype=np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


class Generator:
    """Builds mutant ``i`` of a seed, always the same for the same (seed, i, parents)."""

    def __init__(self, parents: Sequence[Parent], seed: int) -> None:
        if not parents:
            raise ValueError("no parent models")
        self.builtin = [p for p in parents if not p.name.startswith("corpus:")]
        self.corpus = [p for p in parents if p.name.startswith("corpus:")]
        self.seed = seed

    def parent_for(self, rng: np.random.Generator) -> Parent:
        if self.corpus and (not self.builtin or rng.random() < CORPUS_WEIGHT):
            return _pick(rng, self.corpus)
        return _pick(rng, self.builtin)

    def mutant(self, index: int) -> Mutant:
        rng = np.random.default_rng([self.seed, index])
        parent = self.parent_for(rng)
        files: dict[str, Any] = dict(parent.files)
        m = onnx.ModelProto()
        m.CopyFrom(parent.proto)
        done: list[str] = []
        byte_only = rng.random() < 0.15
        wanted = 0 if byte_only else 1 + int(rng.geometric(0.55) - 1)
        tries = 0
        while len(done) < wanted and tries < 20:
            tries += 1
            name, fn, _ = _weighted(rng, PROTO_MUTATORS)
            try:
                done.append(fn(rng, m, parent, files) if name == "external" else fn(rng, m, parent))
            except NotApplicable:
                continue
            except (ValueError, TypeError, IndexError) as e:  # protobuf refused the value
                done.append(f"{name}: not applied ({type(e).__name__})")
        try:
            data = m.SerializeToString()
        except Exception as e:  # e.g. a string field that is not UTF-8
            data = parent.proto.SerializeToString()
            done.append(f"unserializable ({type(e).__name__}); parent bytes used")
        if byte_only or rng.random() < 0.1:
            data, desc = mutate_bytes(rng, data)
            done.append(desc)
        files[MODEL] = data
        c_args = list(_weighted(rng, COMPILE_VARIANTS)[0])
        if rng.random() < 0.1:
            nodes = _nodes(m)
            if nodes:
                c_args += ["--explain", _pick(rng, nodes).name or "n"]
        a_args = list(_weighted(rng, ANALYZE_VARIANTS)[0])
        return Mutant(index, parent.name, files, done, c_args, a_args)
