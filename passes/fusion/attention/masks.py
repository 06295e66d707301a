"""Stage: the attention masks added to (or applied with Where on) the scaled scores.

Recognized, with every constant checked (a form that is not recognized is refused, never
approximated):

* **transformers >= 4.48 ("vmap") masks**: ``Where(cond, 0, fill)`` with ``cond`` an ``And`` tree
  (optionally under an ``Expand``) of: all-true constants, ``q_idx >= 0`` (always true),
  ``kv_idx <= q_idx`` (causal), and the padding lookup
  ``Gather(Flatten(Cast(mask, bool)), b_idx * mask.shape[1] + kv_idx)`` reshaped to the index
  shape, where the ``*_idx`` are ``Range(0, n, 1)`` unsqueezed onto axis 0 (batch), 2 (query) and
  3 (key);
* **classic additive masks** ``(1 - Cast(mask[:, None, None, :])) * fill``;
* **classic causal masks** (older GPT-2): ``Where(Slice(tril buffer)[..., :S, :S], scores,
  fill)`` with the buffer a constant lower-triangular matrix (the slice bounds are checked
  against ``S`` by the shape stage).

:func:`match_mask_add` reads the mask ``Add``, :func:`match_causal_where` the causal ``Where``;
both return what the masking amounts to (:class:`MaskSpec`) or fail with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxforge.ir import Node, Value
from onnxforge.passes.fusion.attention.operands import rank_of, scalar_const
from onnxforge.passes.fusion.attention.shape_ints import Dim, ShapeInts, unsqueeze_axes
from onnxforge.rules import MatchFailed, RewriteContext

_TP = onnx.TensorProto
#: A mask fill value must be at most this ("large negative": e^fill vanishes next to any score).
LARGE_NEGATIVE = -1e4


@dataclass
class MaskSpec:
    """What the scores' masking amounts to."""

    #: The [batch, sequence] tensor whose nonzero entries mean "attend" (None: no padding mask).
    source: Value | None = None
    causal: bool = False
    fill: float | None = None
    #: The Slice of a causal buffer, whose bounds are checked once S is known.
    tril_slice: Node | None = None


def existing_mask_index(source: Value, rc: RewriteContext) -> Value | None:
    """``source`` as int32 when the graph already has it (``source`` itself, or a Cast to int32
    of it that an earlier fusion made for another layer), else None."""
    if source.elem_type() == _TP.INT32:
        return source
    for user in source.consumers():
        if (
            user.op_type == "Cast"
            and user.is_standard_domain()
            and user.graph is rc.graph
            and int(user.attr("to", 0)) == _TP.INT32
            and user.output(0) is not None
        ):
            return user.output(0)
    return None


def match_mask_add(add: Node, rc: RewriteContext) -> tuple[Value, MaskSpec]:
    """Which operand of the mask Add is the mask, and what it is."""
    a, b = add.input(0), add.input(1)
    orders = sorted(((a, b), (b, a)), key=lambda o: _scores_likeness(o[0]))
    reasons: list[str] = []
    for scores, m in orders:
        if _scores_likeness(scores) > 1 or scores is None:
            continue
        try:
            return scores, _additive_mask(m, rc)
        except MatchFailed as e:
            reasons.append(e.reason)
    raise MatchFailed(reasons[0] if reasons else "neither operand of the mask Add comes from the scores")


def _additive_mask(m: Value | None, rc: RewriteContext) -> MaskSpec:
    p = m.producer if m is not None else None
    if p is not None and p.op_type == "Where" and p.is_standard_domain():
        return _vmap_mask(p, rc)
    if p is not None and p.op_type == "Mul" and p.is_standard_domain():
        return _classic_mask(p, rc)
    got = "a constant" if rc.const(m) is not None else (p.op_type if p is not None else "a graph input")
    raise MatchFailed(f"unrecognized attention mask form (the added mask comes from {got})")


def _vmap_mask(where: Node, rc: RewriteContext) -> MaskSpec:
    zero, fill = scalar_const(rc, where.input(1)), scalar_const(rc, where.input(2))
    if zero != 0.0:
        raise MatchFailed("mask Where does not give 0 where attending")
    fill = _check_fill(fill)
    cond = where.input(0)
    p = cond.producer if cond is not None else None
    if p is not None and p.op_type == "Expand":
        cond = p.input(0)
    ints = ShapeInts(rc)
    source, causal = _condition(cond, rc, ints, 0)
    if source is None and not causal:
        raise MatchFailed("the mask condition is always true (an all-zero mask is not fused)")
    return MaskSpec(source=source, causal=causal, fill=fill)


def _condition(v: Value | None, rc: RewriteContext, ints: ShapeInts, depth: int) -> tuple[Value | None, bool]:
    """An And-tree of mask leaves: (padding source or None, causal)."""
    if depth > 8 or v is None:
        raise MatchFailed("mask condition is too deep")
    c = rc.const(v)
    if c is not None:
        if c.dtype != np.bool_ or not c.all():
            raise MatchFailed("a constant mask condition is not all true")
        return None, False
    p = v.producer
    if p is None:
        raise MatchFailed("mask condition comes from a graph input")
    if p.op_type == "And":
        s1, c1 = _condition(p.input(0), rc, ints, depth + 1)
        s2, c2 = _condition(p.input(1), rc, ints, depth + 1)
        if s1 is not None and s2 is not None:
            raise MatchFailed("mask condition has two padding lookups")
        return (s1 if s1 is not None else s2), c1 or c2
    if p.op_type in ("GreaterOrEqual", "LessOrEqual"):
        return None, _comparison(p, rc)
    return _padding_lookup(v, rc, ints), False


def _comparison(p: Node, rc: RewriteContext) -> bool:
    """``idx >= 0`` (always true: False) or ``kv_idx <= q_idx`` (causal: True)."""
    big, small = (p.input(0), p.input(1)) if p.op_type == "GreaterOrEqual" else (p.input(1), p.input(0))
    zero = rc.const(small)
    if zero is not None:
        if zero.size != 1 or float(zero.reshape(-1)[0]) > 0:
            raise MatchFailed("mask comparison with a constant is not idx >= 0")
        _range_index(big, rc)
        return False
    q_axis, _ = _range_index(big, rc)
    kv_axis, _ = _range_index(small, rc)
    if (q_axis, kv_axis) != (2, 3):
        raise MatchFailed(f"mask comparison of index axes ({q_axis}, {kv_axis}) is not kv_idx <= q_idx")
    return True


def _padding_lookup(v: Value, rc: RewriteContext, ints: ShapeInts) -> Value:
    """``Reshape*(Gather(flat(Cast(mask, bool)), b_idx * mask.shape[1] + kv_idx))`` → the
    bool mask."""
    cur: Value | None = v
    final_target: Value | None = None
    for _ in range(4):
        p = cur.producer if cur is not None else None
        if p is None or p.op_type != "Reshape":
            break
        final_target = final_target or p.input(1)
        cur = p.input(0)
    gather = rc.producer(cur, "Gather", "mask padding lookup")
    if int(gather.attr("axis", 0)) != 0:
        raise MatchFailed("mask padding Gather is not on axis 0")
    index = gather.input(1)
    flat = rc.producer(gather.input(0), ("Flatten", "Reshape"), "mask padding Gather data")
    bool_mask = rc.producer(flat.input(0), "Cast", "flattened mask")
    mask = bool_mask.output(0)
    if int(bool_mask.attr("to", 0)) != _TP.BOOL:
        raise MatchFailed("the padding mask is not cast to bool")
    if 2 not in (rank_of(bool_mask.input(0)), rank_of(mask)):
        raise MatchFailed("the attention mask is not known to be 2-D")
    one_column = _flat_layout(flat, rc)
    if one_column or final_target is not None:
        tp = final_target.producer if final_target is not None else None
        if tp is None or tp.op_type != "Shape" or tp.input(0) is not index or tp.attributes:
            raise MatchFailed("the gathered mask is not reshaped to the index shape")
    bm, sm = Dim.sym("mask_batch"), Dim.sym("mask_sequence")
    for val in (mask, bool_mask.input(0)):
        ints.know(val, (bm, sm))
    _padding_index(index, rc, ints, sm)
    assert mask is not None
    return mask


def _flat_layout(flat: Node, rc: RewriteContext) -> bool:
    """True for ``[B*S, 1]`` (Flatten(axis=2)), False for ``[B*S]`` (Reshape to [-1])."""
    if flat.op_type == "Flatten":
        if int(flat.attr("axis", 1)) != 2:
            raise MatchFailed("mask Flatten does not flatten both axes")
        return True
    target = rc.const(flat.input(1))
    if target is None or target.reshape(-1).tolist() not in ([-1], [-1, 1]):
        raise MatchFailed("mask Reshape does not flatten it")
    return target.size == 2


def _padding_index(index: Value | None, rc: RewriteContext, ints: ShapeInts, mask_seq: Dim) -> None:
    """``kv_idx + b_idx * row_length`` with row_length the mask's dim 1."""
    add = rc.producer(index, "Add", "mask padding index")
    for kv, mul_v in ((add.input(0), add.input(1)), (add.input(1), add.input(0))):
        mul = mul_v.producer if mul_v is not None else None
        if mul is None or mul.op_type != "Mul":
            continue
        kv_axis, kv_len = _range_index(kv, rc)
        for b, row in ((mul.input(0), mul.input(1)), (mul.input(1), mul.input(0))):
            try:
                b_axis, _ = _range_index(b, rc)
            except MatchFailed:
                continue
            if (kv_axis, b_axis) != (3, 0):
                raise MatchFailed(f"mask padding index uses axes ({b_axis}, {kv_axis}), not (0, 3)")
            if ints.scalar(row) != mask_seq:
                raise MatchFailed("mask padding index does not stride by the mask's row length")
            if ints.scalar(kv_len) != mask_seq:
                raise MatchFailed("mask key index does not run over the mask's row length")
            return
    raise MatchFailed("mask padding index is not b_idx * row_length + kv_idx")


def _classic_mask(mul: Node, rc: RewriteContext) -> MaskSpec:
    """``(1 - Cast(Unsqueeze(mask, [1, 2]))) * fill``."""
    for sub_v, f_v in ((mul.input(0), mul.input(1)), (mul.input(1), mul.input(0))):
        sub = sub_v.producer if sub_v is not None else None
        if sub is None or sub.op_type != "Sub" or rc.const(f_v) is None:
            continue
        fill = _check_fill(scalar_const(rc, f_v))
        if scalar_const(rc, sub.input(0)) != 1.0:
            raise MatchFailed("mask is not (1 - mask) * fill")
        source, positions = _unsqueezed(sub.input(1), rc)
        if positions != (0, 3):
            raise MatchFailed(f"mask axes land on {list(positions)} of the scores, not [0, 3]")
        return MaskSpec(source=source, fill=fill)
    raise MatchFailed("mask Mul is not (1 - mask) * constant")


def match_causal_where(where: Node, rc: RewriteContext) -> tuple[Value, float, Node]:
    """``Where(tril_buffer[..., 0:S, 0:S], scores, fill)``."""
    fill = _check_fill(scalar_const(rc, where.input(2)))
    cond = where.input(0)
    p = cond.producer if cond is not None else None
    if p is not None and p.op_type == "Cast" and int(p.attr("to", 0)) == _TP.BOOL:
        cond = p.input(0)
    sl = rc.producer(cond, "Slice", "causal Where condition")
    buf = rc.require_const(sl.input(0), "causal mask buffer")
    if buf.ndim < 2 or any(d != 1 for d in buf.shape[:-2]) or buf.shape[-1] != buf.shape[-2]:
        raise MatchFailed(f"causal mask buffer of shape {list(buf.shape)} is not [.., M, M]")
    m = buf.shape[-1]
    if not np.array_equal(buf.reshape(m, m) != 0, np.tril(np.ones((m, m), dtype=bool))):
        raise MatchFailed("causal mask buffer is not lower-triangular ones")
    axes = rc.const(sl.input(3))
    if axes is None or sorted(int(a) % buf.ndim for a in axes.reshape(-1)) != [
        buf.ndim - 2,
        buf.ndim - 1,
    ]:
        raise MatchFailed("causal mask Slice is not on the last two axes")
    steps = rc.const(sl.input(4))
    if steps is not None and any(int(s) != 1 for s in steps.reshape(-1)):
        raise MatchFailed("causal mask Slice step is not 1")
    scores = where.input(1)
    assert scores is not None
    return scores, fill, sl


def _scores_likeness(v: Value | None) -> int:
    """0: from MatMul/Mul/Div (scores), 1: from Where (scores or a mask), 2: not scores."""
    p = v.producer if v is not None else None
    if p is not None and p.op_type in ("MatMul", "Mul", "Div"):
        return 0
    return 1 if p is not None and p.op_type == "Where" else 2


def _check_fill(fill: float | None) -> float:
    if fill is None:
        raise MatchFailed("mask fill value is not a constant scalar")
    if not math.isfinite(fill) or fill > LARGE_NEGATIVE:
        raise MatchFailed(f"mask fill value {fill:g} is not a finite value <= {LARGE_NEGATIVE:g}")
    return fill


def _range_index(v: Value | None, rc: RewriteContext) -> tuple[int, Value | None]:
    """``Range(0, n, 1)`` unsqueezed into a tensor broadcasting against rank 4: (its axis, n)."""
    chain: list[list[int]] = []
    cur = v
    for _ in range(8):
        p = cur.producer if cur is not None else None
        if p is None or p.op_type != "Unsqueeze":
            break
        axes = unsqueeze_axes(p, rc)
        if axes is None:
            raise MatchFailed("index Unsqueeze axes are not constant")
        chain.append(axes)
        cur = p.input(0)
    r = rc.producer(cur, "Range", "mask index")
    if scalar_const(rc, r.input(0)) != 0 or scalar_const(rc, r.input(2)) != 1:
        raise MatchFailed("mask index Range does not start at 0 with step 1")
    rank, pos = 1, 0
    for axes in reversed(chain):
        rank, pos = _unsqueeze_position(rank, pos, axes)
    if rank > 4:
        raise MatchFailed("mask index has rank above 4")
    return pos + 4 - rank, r.input(1)


def _unsqueeze_position(rank: int, pos: int, axes: Sequence[int]) -> tuple[int, int]:
    """Where axis ``pos`` of a rank-``rank`` tensor lands after Unsqueeze(axes)."""
    out_rank = rank + len(axes)
    inserted = {a + out_rank if a < 0 else a for a in axes}
    kept = [o for o in range(out_rank) if o not in inserted]
    return out_rank, kept[pos]


def _unsqueezed(v: Value | None, rc: RewriteContext) -> tuple[Value, tuple[int, ...]]:
    """Walk back through Unsqueeze and Cast nodes to a 2-D source; the positions its two axes
    take in a rank-4 tensor."""
    chain: list[list[int]] = []
    cur = v
    for _ in range(8):
        p = cur.producer if cur is not None else None
        if p is None or p.op_type not in ("Unsqueeze", "Cast"):
            break
        if p.op_type == "Unsqueeze":
            axes = unsqueeze_axes(p, rc)
            if axes is None:
                raise MatchFailed("mask Unsqueeze axes are not constant")
            chain.append(axes)
        cur = p.input(0)
    if cur is None or rank_of(cur) != 2:
        raise MatchFailed("the attention mask is not known to be 2-D")
    rank, positions = 2, [0, 1]
    for axes in reversed(chain):
        new = [_unsqueeze_position(rank, p, axes)[1] for p in positions]
        rank += len(axes)
        positions = new
    if rank != 4:
        raise MatchFailed(f"the attention mask is unsqueezed to rank {rank}, not 4")
    return cur, tuple(positions)
