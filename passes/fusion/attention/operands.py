"""Reading the operands of the attention pattern: scalar constants, scalar scale factors on the
data path, and Transpose permutations."""

from __future__ import annotations

from onnxforge.ir import Node, Value
from onnxforge.rules import RewriteContext

#: Longest chain of Transposes / scalings walked through.
MAX_CHAIN = 24


def scalar_const(rc: RewriteContext, v: Value | None) -> float | None:
    """The value of a one-element numeric constant, else None."""
    arr = rc.const(v)
    if arr is None or arr.size != 1 or arr.dtype.kind not in "fiu":
        return None
    return float(arr.reshape(-1)[0])


def scale_factor(
    node: Node, rc: RewriteContext, data: Value | None, max_rank: int
) -> tuple[Value, float] | None:
    """For ``Mul(x, c)``, ``Mul(c, x)`` or ``Div(x, c)`` by a one-element float constant that
    does not grow the rank: ``(x, factor)``; else None. ``data`` is the operand on the data path
    when known."""
    if node.op_type not in ("Mul", "Div"):
        return None
    orders = [(0, 1), (1, 0)] if node.op_type == "Mul" else [(0, 1)]
    for xi, ci in orders:
        x, c = node.input(xi), node.input(ci)
        arr = rc.const(c)
        if x is None or arr is None or rc.const(x) is not None or (data is not None and x is not data):
            continue
        if arr.size != 1 or arr.dtype.kind != "f" or arr.ndim > max_rank:
            continue
        f = float(arr.reshape(-1)[0])
        if node.op_type == "Div":
            if f == 0.0:
                return None
            f = 1.0 / f
        return x, f
    return None


def perm(node: Node, rank: int) -> tuple[int, ...]:
    """A Transpose's permutation (reversed axes without the attribute)."""
    p = node.attr("perm", None)
    return tuple(int(i) for i in p) if p is not None else tuple(reversed(range(rank)))


def rank_of(v: Value | None) -> int | None:
    s = v.shape() if v is not None else None
    return None if s is None else len(s)
