"""Rewriting passes, one module per pass family, and the registry of them.

The registry is explicit: importing this package imports the pass modules and nothing
registers itself as a side effect. Add a new pass to :data:`ALL_PASSES`. Third-party passes
come from the entry-point group ``onnxforge.passes`` (:mod:`onnxforge.passes.plugins`), loaded
the first time :func:`get_pass` meets a name that is not built in or :func:`registered_passes`
is asked for the whole list.
"""

from __future__ import annotations

import difflib

from onnxforge.errors import UsageError
from onnxforge.passes.cleanup.constant_folding import ConstantFolding
from onnxforge.passes.cleanup.constants import NormalizeConstants
from onnxforge.passes.cleanup.cse import CommonSubexpressionElimination
from onnxforge.passes.cleanup.dead_code import DeadCodeElimination
from onnxforge.passes.cleanup.dedup_initializers import DeduplicateInitializers
from onnxforge.passes.cleanup.noop_elimination import NoOpElimination
from onnxforge.passes.cleanup.opset_upgrade import RaiseOpset
from onnxforge.passes.cleanup.shape_inference import ShapeInference
from onnxforge.passes.cleanup.toposort import TopologicalSort
from onnxforge.passes.compression.fp16 import ConvertFloat16
from onnxforge.passes.compression.int4 import QuantizeWeightsInt4
from onnxforge.passes.compression.int8 import QuantizeInt8
from onnxforge.passes.compression.low_rank import FactorizeLowRank
from onnxforge.passes.compression.pruning import PruneChannels, PruneMagnitude
from onnxforge.passes.compression.weight_sharing import ShareWeights
from onnxforge.passes.fusion import FuseOnnxRuntime, FusePortable
from onnxforge.passes.graphsurgeon import GraphSurgeonPass
from onnxforge.passes.lowering.cpu.nchwc import LowerNchwc
from onnxforge.passes.lowering.packed_weights import LowerPackedWeights
from onnxforge.passes.plugins import load_plugins
from onnxforge.passmanager import Pass

#: Every pass, in the order a lossless pipeline would run them.
ALL_PASSES: tuple[type[Pass], ...] = (
    NormalizeConstants,
    ConstantFolding,
    NoOpElimination,
    CommonSubexpressionElimination,
    DeduplicateInitializers,
    DeadCodeElimination,
    TopologicalSort,
    ShapeInference,
    RaiseOpset,
    FusePortable,
    FuseOnnxRuntime,
    QuantizeInt8,
    QuantizeWeightsInt4,
    ConvertFloat16,
    ShareWeights,
    FactorizeLowRank,
    PruneMagnitude,
    PruneChannels,
    LowerNchwc,
    LowerPackedWeights,
)

# GraphSurgeonPass is not in ALL_PASSES: it wraps a user's function, so it cannot be built from
# a name on the command line; build it in code (docs/WRITING_PASSES.md).

#: Passes by their CLI name.
PASSES_BY_NAME: dict[str, type[Pass]] = {p.name: p for p in ALL_PASSES}


def registered_passes() -> tuple[type[Pass], ...]:
    """Every pass a name can select: :data:`ALL_PASSES`, then the plugins' passes (loaded on
    the first call; a broken plugin is skipped with a warning)."""
    return ALL_PASSES + tuple(load_plugins(PASSES_BY_NAME).passes.values())


def get_pass(name: str) -> type[Pass]:
    """The pass class called ``name``, built in or from a plugin; raises :class:`UsageError`
    listing the known names (and the plugins that failed to load, if any)."""
    cls = PASSES_BY_NAME.get(name)
    if cls is not None:
        return cls
    plugins = load_plugins(PASSES_BY_NAME)
    cls = plugins.passes.get(name)
    if cls is None:
        known = [*PASSES_BY_NAME, *plugins.passes]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        broken = f"; plugins that failed to load: {', '.join(plugins.errors)}" if plugins.errors else ""
        raise UsageError(f"unknown pass {name!r}{hint}; known passes: {', '.join(sorted(known))}{broken}")
    return cls


__all__ = [
    "ALL_PASSES",
    "PASSES_BY_NAME",
    "CommonSubexpressionElimination",
    "ConvertFloat16",
    "ConstantFolding",
    "DeadCodeElimination",
    "DeduplicateInitializers",
    "FactorizeLowRank",
    "FuseOnnxRuntime",
    "FusePortable",
    "GraphSurgeonPass",
    "LowerNchwc",
    "LowerPackedWeights",
    "NoOpElimination",
    "NormalizeConstants",
    "PruneChannels",
    "PruneMagnitude",
    "QuantizeInt8",
    "QuantizeWeightsInt4",
    "RaiseOpset",
    "ShapeInference",
    "ShareWeights",
    "TopologicalSort",
    "get_pass",
    "registered_passes",
]
