"""Pruning passes: unstructured and N:M weight pruning (:class:`PruneMagnitude`, ``prune``) and
dependency-aware channel pruning that shrinks the graph (:class:`PruneChannels`,
``prune-channels``). See ``docs/PRUNING.md``."""

from __future__ import annotations

from onnxforge.passes.compression.pruning.channels import ChannelPruneOptions, PruneChannels
from onnxforge.passes.compression.pruning.magnitude import PruneMagnitude, PruneOptions
from onnxforge.passes.compression.pruning.report import REPORT_KEY, GroupPruning, LayerPruning, PruningReport

__all__ = [
    "REPORT_KEY",
    "ChannelPruneOptions",
    "PruneChannels",
    "GroupPruning",
    "LayerPruning",
    "PruneMagnitude",
    "PruneOptions",
    "PruningReport",
]
