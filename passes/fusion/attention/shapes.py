"""Stage: the shapes, checked by evaluating every Reshape target.

In terms of ``B`` and ``S``, the first two dims of the attention input ``x`` (a small symbolic
evaluation of the integer shape subgraph, :mod:`.shape_ints`), every head Reshape target must be
exactly ``[B, S, N, d]`` and the output Reshape's ``[B, S, N * d]`` (``0`` and one ``-1``
allowed), GPT-2's Conv1D Reshapes ``[-1, H]`` and ``[B, S, cols]``, and a causal buffer's Slice
``[0:S, 0:S]``; ``N`` and ``d`` are read from the head Reshapes. :func:`check_shapes` returns
``(N, d)`` or fails with the reason.

Reshape targets computed from intermediate values of the pattern (GPT-2 reads ``Shape`` of the
split q/k/v and of the transposed context) are taken into the match when they only feed the
pattern (:func:`absorb_shape_readers`), so that the engine's "intermediate value read outside the
match" check passes.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnxforge.ir import Node
from onnxforge.passes.fusion.attention.context import Context
from onnxforge.passes.fusion.attention.heads import Head
from onnxforge.passes.fusion.attention.projections import Projection
from onnxforge.passes.fusion.attention.scores import Scores
from onnxforge.passes.fusion.attention.shape_ints import Dim, Dims, ShapeInts, format_dims
from onnxforge.rules import MatchFailed, RewriteContext

#: Ops of the integer shape computations that may be taken into a match.
SHAPE_OPS = frozenset(
    {
        "Shape",
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "Concat",
        "Slice",
        "Cast",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Identity",
    }
)


def check_shapes(
    anchor: Node, context: Context, scores: Scores, heads: Sequence[Head], rc: RewriteContext
) -> tuple[int, int]:
    """Evaluate every Reshape target against ``B``, ``S`` of the input: the heads' reshapes
    give ``N`` and ``d``; returns them."""
    x = heads[0].proj.x
    xs = x.shape()
    if xs is None or len(xs) != 3:
        raise MatchFailed("the attention input is not known to be 3-D")
    b, s, h_in = Dim.of(xs[0], "B"), Dim.of(xs[1], "S"), Dim.of(xs[2], "H_in")
    ints = ShapeInts(rc)
    ints.know(x, (b, s, h_in))
    for h in heads:
        _check_projection(h.proj, ints, b, s, h_in)
    nd: set[tuple[int, int]] = set()
    for h, what in zip(heads, "QKV"):
        cols = int(h.proj.weight.shape[1])
        for val in h.pre:
            ints.know(val, (b, s, Dim(cols)))
        n, d = _head_split(h.reshape, ints, cols, what)
        nd.add((n, d))
        dims = (b, s, Dim(n), Dim(d))
        check_reshape(h.reshape, ints, (b, s, Dim(cols)), dims, f"{what} head Reshape")
        for val, perm in h.laid_out:
            ints.know(val, tuple(dims[i] for i in perm))
    if len(nd) != 1:
        raise MatchFailed(f"Q, K and V are split into different heads {sorted(nd)}")
    ((n, d),) = nd
    hn, hd = Dim(n), Dim(d)
    for val in scores.values:
        ints.know(val, (b, hn, s, s))
    ints.know(context.softmax.output(0), (b, hn, s, s))
    ints.know(context.matmul.output(0), (b, hn, s, hd))
    ints.know(context.transpose.output(0), (b, s, hn, hd))
    check_reshape(anchor, ints, (b, s, hn, hd), (b, s, Dim(n * d)), "attention output Reshape")
    if scores.mask.tril_slice is not None:
        check_tril_bounds(scores.mask.tril_slice, ints, s)
    return n, d


def _check_projection(proj: Projection, ints: ShapeInts, b: Dim, s: Dim, h_in: Dim) -> None:
    rows = int(proj.weight.shape[0])
    if h_in.is_const and h_in.const != rows:
        raise MatchFailed(f"input hidden size {h_in} does not match the weight rows {rows}")
    if proj.conv1d is not None:
        c1 = proj.conv1d
        flat, unflat, gemm, full = c1.flatten, c1.unflatten, c1.gemm, c1.columns
        target = ints.value(flat.input(1))
        first_ok = (
            target is not None
            and len(target[0]) == 2
            and (
                target[0][0] == Dim(-1)
                or (b.is_const and s.is_const and target[0][0] == Dim(b.const * s.const))
            )
        )
        if target is None or not first_ok or target[0][1] != h_in:
            shown = format_dims(target[0]) if target is not None else "unknown"
            raise MatchFailed(f"the Conv1D flattening Reshape target {shown} is not [-1, {h_in}]")
        ints.know(flat.output(0), (None, h_in))
        ints.know(gemm.output(0), (None, Dim(full)))
        check_reshape(unflat, ints, (None, Dim(full)), (b, s, Dim(full)), "Conv1D output Reshape")
    for val, cols in proj.bs_values:
        ints.know(val, (b, s, Dim(cols)))


def _head_split(reshape: Node, ints: ShapeInts, cols: int, what: str) -> tuple[int, int]:
    target = ints.value(reshape.input(1))
    if target is None or len(target[0]) != 4:
        raise MatchFailed(f"{what} head Reshape target is not a known 4-element shape")
    t2, t3 = target[0][2], target[0][3]
    if t3 is not None and t3.is_const and t3.const > 0:
        d = t3.const
        if cols % d:
            raise MatchFailed(f"{what} head size {d} does not divide {cols}")
        return cols // d, d
    if t2 is not None and t2.is_const and t2.const > 0 and t3 == Dim(-1):
        n = t2.const
        if cols % n:
            raise MatchFailed(f"{what} head count {n} does not divide {cols}")
        return n, cols // n
    raise MatchFailed(
        f"{what} heads/head size cannot be read from the Reshape target {format_dims(target[0])}"
    )


def check_reshape(node: Node, ints: ShapeInts, in_dims: Dims, expected: Dims, what: str) -> None:
    """The target of ``node`` gives ``expected`` for an input of ``in_dims`` (0 copies an input
    dim unless allowzero; a single -1 is implied by the element count)."""
    target = ints.value(node.input(1))
    if target is None:
        raise MatchFailed(f"{what} target cannot be evaluated")
    dims = target[0]
    if len(dims) != len(expected):
        raise MatchFailed(f"{what} target {format_dims(dims)} has rank {len(dims)}, not {len(expected)}")
    allowzero = int(node.attr("allowzero", 0))
    minus_one = 0
    for i, (t, want) in enumerate(zip(dims, expected)):
        got = t
        if t is not None and t.is_const and t.const == 0 and not allowzero:
            got = in_dims[i] if i < len(in_dims) else None
        elif t is not None and t.is_const and t.const == -1:
            minus_one += 1
            continue
        if got is None or want is None or got != want:
            raise MatchFailed(f"{what} target {format_dims(dims)} is not {format_dims(expected)}")
    if minus_one > 1:
        raise MatchFailed(f"{what} target has more than one -1")


def check_tril_bounds(sl: Node, ints: ShapeInts, s: Dim) -> None:
    """The causal buffer's slice starts at [0, 0] and ends at S on both axes."""
    starts, ends = ints.value(sl.input(1)), ints.value(sl.input(2))
    if starts is None or any(d != Dim(0) for d in starts[0]):
        raise MatchFailed("causal mask Slice does not provably start at [0, 0]")
    if ends is None or len(ends[0]) != 2:
        raise MatchFailed("causal mask Slice ends cannot be evaluated")
    for e in ends[0]:
        if e == s:
            continue
        if e is not None and e.is_const and s.is_const and e.const >= s.const:
            continue  # a wider slice would not broadcast against [.., S, S]: valid runs take S
        raise MatchFailed(f"causal mask Slice ends {format_dims(ends[0])} are not the sequence length {s}")


def absorb_shape_readers(nodes: list[Node], anchor: Node) -> list[Node]:
    """Add the shape computations that read the pattern's intermediate values and feed only the
    pattern (GPT-2 reshapes by ``Shape`` of its split q/k/v), so that they go with it."""
    inside = set(nodes)
    extra: list[Node] = []
    for n in nodes:
        if n is anchor:
            continue
        for v in n.outputs:
            if v is None:
                continue
            for user in v.consumers():
                if user in inside or user.op_type != "Shape" or not user.is_standard_domain():
                    continue
                group = _shape_closure(user, inside)
                if group is not None:
                    inside.update(group)
                    extra.extend(group)
    return nodes + extra


def _shape_closure(start: Node, inside: set[Node]) -> list[Node] | None:
    """``start`` and the shape ops downstream of it, if all of their readers are in ``inside``
    or in the group; else None."""
    group: dict[Node, None] = {start: None}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for out in node.outputs:
            if out is None:
                continue
            if out.is_graph_output():
                return None
            for user in out.consumers():
                if user in inside or user in group:
                    continue
                if user.op_type not in SHAPE_OPS or not user.is_standard_domain() or len(group) > 64:
                    return None
                group[user] = None
                frontier.append(user)
    return list(group)
