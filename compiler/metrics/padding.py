"""Padding-aware error measurement: compare only the positions a padding mask marks as real.

Transformer encoders are fed padded batches: ``input_ids`` of shape ``[batch, sequence]`` with
an ``attention_mask`` that is 1 on real tokens and 0 on padding. The values a model computes at
padded positions are never used (pooling and attention mask them out), yet they are most of a
short sentence's ``last_hidden_state`` and quantization perturbs them freely. An error measure
over the whole tensor then reports damage nobody sees and keeps layers in float for nothing.

:func:`find_padding_mask` picks the mask input (``"auto"``: a 2-D input named
``attention_mask`` or ending in it), and :func:`valid_positions` selects the real positions of a
tensor whose leading dimensions are the mask's shape. Tensors of any other shape are compared
whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from onnxforge.errors import UsageError

#: ``padding_mask`` values that turn masking off.
OFF = ("none", "off", "")


def find_padding_mask(choice: str | None, inputs: Sequence[str], sample: Mapping[str, np.ndarray] | None) -> str | None:
    """The name of the model input that masks padding, or None.

    ``choice``: ``"auto"`` (an input named ``attention_mask`` or ``*_attention_mask`` whose
    sample is 2-D), ``None``/``"none"`` (off), or an input name (checked: it must be a model
    input with a 2-D sample)."""
    if choice is None or choice.lower() in OFF:
        return None
    if choice != "auto":
        if choice not in inputs:
            raise UsageError(f"--padding-mask {choice!r} is not an input of the model (inputs: {', '.join(inputs)})")
        if sample is not None and choice in sample and np.asarray(sample[choice]).ndim != 2:
            raise UsageError(f"--padding-mask {choice!r} must be 2-D [batch, sequence], got shape {np.asarray(sample[choice]).shape}")
        return choice
    for name in inputs:
        if name == "attention_mask" or name.endswith("_attention_mask"):
            if sample is None or (name in sample and np.asarray(sample[name]).ndim == 2):
                return name
    return None


def valid_positions(tensor: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``tensor``'s entries at the positions where ``mask`` is non-zero, flattened; the whole
    tensor flattened when there is no mask or the leading dimensions are not the mask's shape."""
    if mask is None or tensor.ndim < mask.ndim or tensor.shape[: mask.ndim] != mask.shape:
        return tensor.reshape(-1)
    keep = np.asarray(mask) != 0
    if not keep.any():
        return tensor.reshape(-1)
    return tensor[keep].reshape(-1)
