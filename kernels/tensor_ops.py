"""Shape and data-movement kernels: Shape, Size, Identity, Reshape, Flatten, Squeeze, Unsqueeze,
Transpose, Concat, Split, Slice, Gather, GatherElements, Expand, Tile, ConstantOfShape, Range,
Pad, Trilu, CumSum and NonZero.

Data movement is dtype-agnostic (strings and ml_dtypes types included). Index and shape inputs
follow the ONNX rules exactly (negative axes, Slice clamping, Reshape's 0 and -1); inputs the
runtime would reject raise :class:`InvalidInputs`.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, numpy_helper

from onnxforge.kernels.checks import (
    FLOATS,
    INDEX,
    NUMERIC,
    PLAIN,
    int_scalar,
    int_vector,
    normalize_axes,
    normalize_axis,
    num_elements,
    require_dtype,
    require_same_dtype,
    scalar,
)
from onnxforge.kernels.kernel import InvalidInputs, KernelCall, KernelSet, Unsupported

#: The kernels this module defines (collected by onnxforge.kernels.table).
KERNELS = KernelSet()


# --------------------------------------------------------------------------------------------
# Shape queries
# --------------------------------------------------------------------------------------------
@KERNELS.register("Shape", attrs={"start", "end"}, shape_only=True)
def _shape(call: KernelCall) -> np.ndarray:
    dims = call.require(0).shape
    r = len(dims)
    start = int(call.attr("start", 0))
    end = call.attr("end")
    end = r if end is None else int(end)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return np.array(dims[start:end], dtype=np.int64)


@KERNELS.register("Size", shape_only=True)
def _size(call: KernelCall) -> np.ndarray:
    return np.array(num_elements(call.require(0).shape), dtype=np.int64)


@KERNELS.register("Identity")
def _identity(call: KernelCall) -> np.ndarray:
    return call.require(0).copy()


# --------------------------------------------------------------------------------------------
# Reshaping
# --------------------------------------------------------------------------------------------
@KERNELS.register("Reshape", attrs={"allowzero"}, min_opset=5)
def _reshape(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    shape = int_vector(call, call.require(1), "shape")
    assert shape is not None
    if call.require(1).dtype != np.int64:
        raise InvalidInputs("Reshape: shape must be int64")
    allowzero = bool(call.attr("allowzero", 0))
    dims = list(shape)
    if not allowzero:
        for i, d in enumerate(dims):
            if d == 0:
                if i >= x.ndim:
                    raise InvalidInputs(f"Reshape: 0 at position {i} beyond the input rank {x.ndim}")
                dims[i] = x.shape[i]
    infer = [i for i, d in enumerate(dims) if d == -1]
    if len(infer) > 1 or any(d < -1 for d in dims):
        raise InvalidInputs(f"Reshape: invalid shape {shape}")
    if infer:
        known = num_elements(d for i, d in enumerate(dims) if i != infer[0])
        if known == 0 or x.size % known:
            raise InvalidInputs(f"Reshape: cannot infer -1 in {shape} for {x.size} elements")
        dims[infer[0]] = x.size // known
    if num_elements(dims) != x.size:
        raise InvalidInputs(f"Reshape: {x.shape} has {x.size} elements, shape {shape} needs {num_elements(dims)}")
    return x.reshape(dims)


@KERNELS.register("Flatten", attrs={"axis"})
def _flatten(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    r = x.ndim
    axis = int(call.attr("axis", 1))
    if not -r <= axis <= r:
        raise InvalidInputs(f"Flatten: axis {axis} out of range for rank {r}")
    if axis < 0:
        axis += r
    return x.reshape(num_elements(x.shape[:axis]), num_elements(x.shape[axis:]))


def _axes_arg(call: KernelCall, attr_until: int) -> list[int] | None:
    """Axes from the ``axes`` attribute (opset < ``attr_until``) or input 1 (from it)."""
    if call.opset < attr_until:
        axes = call.attr("axes")
        return None if axes is None else [int(a) for a in axes]
    if "axes" in call.attrs:
        raise Unsupported(f"{call.op_type}: axes attribute is not valid from opset {attr_until}")
    return int_vector(call, call.input(1), "axes")


@KERNELS.register("Squeeze", attrs={"axes"})
def _squeeze(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    axes = _axes_arg(call, 13)
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    norm = normalize_axes(call, axes, x.ndim)
    for a in norm:
        if x.shape[a] != 1:
            raise InvalidInputs(f"Squeeze: dimension {a} has size {x.shape[a]}, not 1")
    return x.reshape([d for i, d in enumerate(x.shape) if i not in norm])


@KERNELS.register("Unsqueeze", attrs={"axes"})
def _unsqueeze(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    axes = _axes_arg(call, 13)
    if axes is None:
        raise InvalidInputs("Unsqueeze: axes are required")
    out_rank = x.ndim + len(axes)
    norm = set(normalize_axes(call, axes, out_rank))
    dims = iter(x.shape)
    return x.reshape([1 if i in norm else next(dims) for i in range(out_rank)])


@KERNELS.register("Transpose", attrs={"perm"})
def _transpose(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    perm = call.attr("perm")
    if perm is None:
        perm = list(range(x.ndim))[::-1]
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(x.ndim)):
        raise InvalidInputs(f"Transpose: perm {perm} is not a permutation of rank {x.ndim}")
    return np.transpose(x, perm)


# --------------------------------------------------------------------------------------------
# Joining and splitting
# --------------------------------------------------------------------------------------------
@KERNELS.register("Concat", attrs={"axis"}, min_opset=4)
def _concat(call: KernelCall) -> np.ndarray:
    xs = call.present()
    if not xs:
        raise InvalidInputs("Concat: no inputs")
    require_same_dtype(call, xs)
    if "axis" not in call.attrs:
        raise InvalidInputs("Concat: attribute 'axis' is required")
    rank = xs[0].ndim
    if rank == 0 or any(x.ndim != rank for x in xs):
        raise InvalidInputs("Concat: inputs must have the same non-zero rank")
    axis = normalize_axis(call, call.attr("axis"), rank)
    return np.concatenate(xs, axis=axis)


@KERNELS.register("Split", attrs={"axis", "split", "num_outputs"}, min_opset=2)
def _split(call: KernelCall) -> list[np.ndarray]:
    x = call.require(0)
    if x.ndim == 0:
        raise InvalidInputs("Split: input must have rank >= 1")
    axis = normalize_axis(call, call.attr("axis", 0), x.ndim)
    dim = x.shape[axis]
    n = call.num_outputs
    if call.opset < 13:
        sizes = call.attr("split")
        sizes = None if sizes is None else [int(s) for s in sizes]
    else:
        if "split" in call.attrs:
            raise Unsupported("Split: split attribute is not valid from opset 13")
        sizes = int_vector(call, call.input(1), "split")
    num_outputs = call.attr("num_outputs")
    if num_outputs is not None and (call.opset < 18 or sizes is not None):
        raise InvalidInputs("Split: num_outputs is only valid from opset 18 and without split")
    if sizes is not None:
        if len(sizes) != n or sum(sizes) != dim or any(s < 0 for s in sizes):
            raise InvalidInputs(f"Split: sizes {sizes} do not split {dim} into {n} outputs")
    elif num_outputs is not None:
        if int(num_outputs) != n or n < 1:
            raise InvalidInputs(f"Split: num_outputs {num_outputs} but the node has {n} outputs")
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] < 0:
            raise InvalidInputs(f"Split: cannot split {dim} into {n} chunks of {chunk}")
    else:
        if n < 1 or dim % n:
            raise InvalidInputs(f"Split: {dim} is not divisible into {n} equal parts")
        sizes = [dim // n] * n
    bounds = np.cumsum([0, *sizes])
    index: list[slice] = [slice(None)] * x.ndim
    outs = []
    for b, e in zip(bounds[:-1], bounds[1:]):
        index[axis] = slice(int(b), int(e))
        outs.append(x[tuple(index)])
    return outs


# --------------------------------------------------------------------------------------------
# Indexing
# --------------------------------------------------------------------------------------------
def _slice_args(call: KernelCall) -> tuple[list[int], list[int], list[int] | None, list[int] | None]:
    if call.opset < 10:
        starts, ends, axes = call.attr("starts"), call.attr("ends"), call.attr("axes")
        if starts is None or ends is None:
            raise InvalidInputs("Slice: starts and ends are required")
        return (
            [int(s) for s in starts],
            [int(e) for e in ends],
            None if axes is None else [int(a) for a in axes],
            None,
        )
    if call.attrs:
        raise Unsupported("Slice: attributes are not valid from opset 10")
    starts = int_vector(call, call.require(1), "starts")
    ends = int_vector(call, call.require(2), "ends")
    assert starts is not None and ends is not None
    return starts, ends, int_vector(call, call.input(3), "axes"), int_vector(call, call.input(4), "steps")


@KERNELS.register("Slice", attrs={"starts", "ends", "axes"})
def _slice(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    starts, ends, axes, steps = _slice_args(call)
    n = len(starts)
    if axes is None:
        axes = list(range(n))
    if steps is None:
        steps = [1] * n
    if not (len(ends) == len(axes) == len(steps) == n):
        raise InvalidInputs("Slice: starts, ends, axes and steps must have the same length")
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, normalize_axes(call, axes, x.ndim), steps):
        if step == 0:
            raise InvalidInputs("Slice: step cannot be 0")
        dim = x.shape[axis]
        if start < 0:
            start += dim
        if end < 0:
            end += dim
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            # end == -1 means "through index 0", which python spells None.
            index[axis] = slice(start, end if end >= 0 else None, step)
    return x[tuple(index)]


def _normalized_indices(call: KernelCall, idx: np.ndarray, dim: int) -> np.ndarray:
    require_dtype(call, idx, INDEX, "indices")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise InvalidInputs(f"{call.op_type}: indices out of range [-{dim}, {dim - 1}]")
    return np.where(idx < 0, idx + dim, idx)


def _gather_elements_count(call: KernelCall) -> int:
    x, idx = call.require(0), call.require(1)
    axis = normalize_axis(call, call.attr("axis", 0), x.ndim)
    return (x.size // max(x.shape[axis], 1)) * idx.size if x.ndim else idx.size


@KERNELS.register("Gather", attrs={"axis"}, output_elements=_gather_elements_count)
def _gather(call: KernelCall) -> np.ndarray:
    x, idx = call.require(0), call.require(1)
    if x.ndim == 0:
        raise InvalidInputs("Gather: data must have rank >= 1")
    axis = normalize_axis(call, call.attr("axis", 0), x.ndim)
    return np.take(x, _normalized_indices(call, idx, x.shape[axis]), axis=axis)


@KERNELS.register("GatherElements", attrs={"axis"}, min_opset=11)
def _gather_elements(call: KernelCall) -> np.ndarray:
    x, idx = call.require(0), call.require(1)
    if x.ndim == 0 or idx.ndim != x.ndim:
        raise InvalidInputs("GatherElements: data and indices must have the same rank >= 1")
    axis = normalize_axis(call, call.attr("axis", 0), x.ndim)
    for i, (d, k) in enumerate(zip(x.shape, idx.shape)):
        if i != axis and k > d:
            raise InvalidInputs(f"GatherElements: indices dim {i} ({k}) exceeds data dim ({d})")
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = _normalized_indices(call, idx, x.shape[axis])
    return x[tuple(grid)]


# --------------------------------------------------------------------------------------------
# Broadcasting and generation
# --------------------------------------------------------------------------------------------
def _shape_input(call: KernelCall, i: int, what: str) -> list[int]:
    x = call.require(i)
    if x.dtype != np.int64:
        raise InvalidInputs(f"{call.op_type}: {what} must be int64")
    dims = int_vector(call, x, what)
    assert dims is not None
    if any(d < 0 for d in dims):
        raise InvalidInputs(f"{call.op_type}: negative dimension in {dims}")
    return dims


def _expand_shape(call: KernelCall) -> tuple[int, ...]:
    x = call.require(0)
    target = _shape_input(call, 1, "shape")
    try:
        return tuple(np.broadcast_shapes(x.shape, tuple(target)))
    except ValueError:
        raise InvalidInputs(f"Expand: {x.shape} does not broadcast to {target}") from None


@KERNELS.register("Expand", min_opset=8, output_elements=lambda call: num_elements(_expand_shape(call)))
def _expand(call: KernelCall) -> np.ndarray:
    return np.broadcast_to(call.require(0), _expand_shape(call))


def _tile_repeats(call: KernelCall) -> list[int]:
    x = call.require(0)
    reps = _shape_input(call, 1, "repeats")
    if len(reps) != x.ndim:
        raise InvalidInputs(f"Tile: {len(reps)} repeats for rank {x.ndim}")
    return reps


@KERNELS.register(
    "Tile", min_opset=6, output_elements=lambda call: call.require(0).size * num_elements(_tile_repeats(call))
)
def _tile(call: KernelCall) -> np.ndarray:
    return np.tile(call.require(0), _tile_repeats(call))


def _fill_value(call: KernelCall) -> np.ndarray:
    value = call.attr("value")
    if value is None:
        return np.zeros((), dtype=np.float32)
    arr = numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)
    if arr.size != 1:
        raise InvalidInputs("ConstantOfShape: value must have exactly one element")
    return arr.reshape(())


@KERNELS.register(
    "ConstantOfShape",
    attrs={"value"},
    min_opset=9,
    output_elements=lambda call: num_elements(_shape_input(call, 0, "shape")),
)
def _constant_of_shape(call: KernelCall) -> np.ndarray:
    if call.require(0).ndim != 1:
        raise InvalidInputs("ConstantOfShape: input must be 1-D")
    dims = _shape_input(call, 0, "shape")
    value = _fill_value(call)
    return np.full(dims, value, dtype=value.dtype)


_RANGE_TYPES = frozenset(np.dtype(t) for t in (np.int16, np.int32, np.int64, np.float32, np.float64))


def _range_args(call: KernelCall) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    args = [scalar(call, call.require(i), name) for i, name in enumerate(("start", "limit", "delta"))]
    start, limit, delta = (a for a in args if a is not None)
    require_same_dtype(call, [start, limit, delta])
    require_dtype(call, start, _RANGE_TYPES)
    if delta == 0:
        raise InvalidInputs("Range: delta cannot be 0")
    if start.dtype in FLOATS:
        if not all(np.isfinite(v) for v in (start, limit, delta)):
            raise InvalidInputs("Range: non-finite arguments")
        # The count as the spec computes it (exactly) and as a runtime computes it in T.
        exact = math.ceil((float(limit) - float(start)) / float(delta))
        in_t = math.ceil(float((limit - start) / delta))
        if exact != in_t:
            raise Unsupported("Range: element count depends on the runtime's precision")
        n = max(exact, 0)
    else:
        s, lim, d = int(start), int(limit), int(delta)
        n = max(-((s - lim) // d), 0)  # ceil((lim - s) / d) in exact integers
    return start, limit, delta, n


@KERNELS.register("Range", attrs={"stash_type"}, min_opset=11, output_elements=lambda call: _range_args(call)[3])
def _range(call: KernelCall) -> np.ndarray:
    start, _, delta, n = _range_args(call)
    dt = start.dtype
    if dt not in FLOATS:
        return (int(start) + np.arange(n, dtype=np.int64) * int(delta)).astype(dt)
    # The spec says start + i * delta; onnxruntime accumulates (v += delta). Fold only when
    # every reading agrees: in T, in exact arithmetic rounded once, and accumulated in T.
    i = np.arange(n, dtype=np.float64)
    spec_t = (start + i.astype(dt) * delta).astype(dt)
    exact = (np.float64(start) + i * np.float64(delta)).astype(dt)
    steps = np.full(n, delta, dtype=dt)
    if n:
        steps[0] = start
    accumulated = np.cumsum(steps, dtype=dt)
    if not (np.array_equal(spec_t, exact) and np.array_equal(exact, accumulated)):
        raise Unsupported("Range: float result depends on how the runtime accumulates")
    return exact


# --------------------------------------------------------------------------------------------
# Pad, Trilu, CumSum, NonZero
# --------------------------------------------------------------------------------------------
def _pad_args(call: KernelCall) -> tuple[np.ndarray, list[int], list[int], str, np.ndarray | None]:
    x = call.require(0)
    mode = call.attr("mode", "constant")
    if call.opset < 11:
        pads = [int(p) for p in call.attr("pads") or []]
        value = np.asarray(call.attr("value", 0.0))
        axes = list(range(x.ndim))
    else:
        if set(call.attrs) - {"mode"}:
            raise Unsupported("Pad: pads/value attributes are not valid from opset 11")
        pads_in = int_vector(call, call.require(1), "pads")
        assert pads_in is not None
        pads = pads_in
        cv = scalar(call, call.input(2), "constant_value")
        value = cv
        ax = int_vector(call, call.input(3), "axes")
        axes = list(range(x.ndim)) if ax is None else normalize_axes(call, ax, x.ndim)
    if len(pads) != 2 * len(axes):
        raise InvalidInputs(f"Pad: {len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + len(axes)]
    return x, begin, end, str(mode), value


def _pad_elements(call: KernelCall) -> int:
    x, begin, end, _, _ = _pad_args(call)
    return num_elements(max(d + b + e, 0) for d, b, e in zip(x.shape, begin, end))


@KERNELS.register("Pad", attrs={"mode", "pads", "value"}, min_opset=2, output_elements=_pad_elements)
def _pad(call: KernelCall) -> np.ndarray:
    x, begin, end, mode, value = _pad_args(call)
    require_dtype(call, x, PLAIN)
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise InvalidInputs(f"Pad: unknown mode {mode!r}")
    if mode != "constant" and any(p < 0 for p in begin + end):
        raise Unsupported(f"Pad: negative pads in {mode} mode")
    # Negative pads crop first.
    crop: list[slice] = []
    for d, b, e in zip(x.shape, begin, end):
        lo, hi = max(-b, 0), d - max(-e, 0)
        if hi < lo:
            raise InvalidInputs("Pad: negative pads remove more than the dimension")
        crop.append(slice(lo, hi))
    x = x[tuple(crop)]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    for d, (b, e) in zip(x.shape, widths):
        if mode == "reflect" and max(b, e) > d - 1 and (b or e):
            raise Unsupported("Pad: reflect pads wider than the dimension")
        if mode in ("edge", "wrap") and (b or e) and (d == 0 or (mode == "wrap" and max(b, e) > d)):
            raise Unsupported(f"Pad: {mode} pads wider than the dimension")
    if mode == "constant":
        fill = np.zeros((), x.dtype) if value is None else np.asarray(value).astype(x.dtype)
        return np.pad(x, widths, mode="constant", constant_values=fill)
    if mode == "edge":
        return np.pad(x, widths, mode="edge")
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    return np.pad(x, widths, mode="wrap")


@KERNELS.register("Trilu", attrs={"upper"}, min_opset=14)
def _trilu(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    require_dtype(call, x, PLAIN)
    if x.ndim < 2:
        raise InvalidInputs("Trilu: input must have rank >= 2")
    k = int_scalar(call, call.input(1), "k") or 0
    if call.input(1) is not None and call.require(1).dtype != np.int64:
        raise InvalidInputs("Trilu: k must be int64")
    return np.triu(x, k) if int(call.attr("upper", 1)) else np.tril(x, k)


_CUMSUM_TYPES = frozenset(np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64, np.float32, np.float64))


@KERNELS.register("CumSum", attrs={"exclusive", "reverse"}, min_opset=11)
def _cumsum(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    require_dtype(call, x, _CUMSUM_TYPES)
    axis_v = int_scalar(call, call.require(1), "axis")
    if call.require(1).ndim > 1:
        raise InvalidInputs("CumSum: axis must be a scalar")
    if x.ndim == 0:
        raise InvalidInputs("CumSum: input must have rank >= 1")
    assert axis_v is not None
    axis = normalize_axis(call, axis_v, x.ndim)
    exclusive, reverse = bool(call.attr("exclusive", 0)), bool(call.attr("reverse", 0))
    y = np.flip(x, axis) if reverse else x
    # Sequential accumulation in the input dtype, like the runtime.
    out = np.cumsum(y, axis=axis, dtype=x.dtype)
    if exclusive:
        out = np.concatenate(
            [np.zeros_like(np.take(out, [0], axis=axis)), np.take(out, range(out.shape[axis] - 1), axis=axis)],
            axis=axis,
        ) if out.shape[axis] else out
    return np.flip(out, axis) if reverse else out


@KERNELS.register("NonZero", min_opset=9)
def _nonzero(call: KernelCall) -> np.ndarray:
    x = call.require(0)
    require_dtype(call, x, NUMERIC | PLAIN)
    if x.ndim == 0:
        raise Unsupported("NonZero: scalar input")
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)
