"""Multi-head self-attention → onnxruntime's ``com.microsoft::Attention``.

The rule is anchored on the Reshape that closes an exported self-attention block and walks back::

    x ─┬─ MatMul(Wq) [+ bq] [*c] ─ Reshape[B,S,N,d] [*c] ─ Transpose(0,2,1,3) [*c] ─┐
       ├─ MatMul(Wk) [+ bk] [*c] ─ Reshape[B,S,N,d] [*c] ─ Transpose(0,2,3,1) [*c] ─┴ MatMul
       │                                                         [Mul|Div by c]* ─┘
       │                                         [Where(causal tril slice, ., fill)]
       │                                                [Add(., additive mask)]
       │                                                     Softmax(last axis)
       └─ MatMul(Wv) [+ bv] ─ Reshape[B,S,N,d] ─ Transpose(0,2,1,3) ─ MatMul(probs, .)
                                         Transpose(0,2,1,3) ─ Reshape[B,S,H] (anchor)

and replaces it with ``Attention(x, concat(Wq,Wk,Wv), concat(bq,bk,bv), mask_index)`` with
``num_heads``, ``scale`` (only when it is not 1/sqrt(d)), ``unidirectional`` and
``mask_filter_value``. Transposes may come as a chain whose composition is the expected perm.

Projections: a MatMul with a constant 2-D weight and an optional constant bias Add (either
operand order), or one packed projection split into q, k, v: a MatMul [+ Add] or GPT-2's Conv1D
(``Reshape(x,[-1,H]) → Gemm → Reshape[B,S,3H]``) followed by a Split (or three Slices) on the last
axis. ``c`` is a scalar constant (BART-style scaling of q, split sqrt scaling of q and k, or the
usual scaling of the scores); their product becomes the ``scale`` attribute.

What is checked (each refusal raises :class:`MatchFailed` with the reason):

* weights, biases and scales are constants; the dtype is float32 or float16;
* the perms; the Softmax axis is the last one;
* every Reshape target evaluates, by a small symbolic evaluation of the integer shape subgraph
  (Shape, Gather, Unsqueeze, Concat, Slice, arithmetic) in which ``B`` and ``S`` are the first two
  dims of ``x``, to exactly ``[B, S, N, d]`` or ``[B, S, H]`` (``0`` and one ``-1`` allowed);
  ``N`` and ``d`` are read from these targets;
* the mask (below). A mask form that is not recognized is refused, never approximated.

Masks, added to the scaled scores, recognized with every constant checked:

* **transformers >= 4.48 ("vmap") masks**: ``Where(cond, 0, fill)`` with ``cond`` an ``And`` tree
  (optionally under an ``Expand``) of: all-true constants, ``q_idx >= 0`` (always true),
  ``kv_idx <= q_idx`` (causal), and the padding lookup
  ``Gather(Flatten(Cast(mask, bool)), b_idx * mask.shape[1] + kv_idx)`` reshaped to the index
  shape, where the ``*_idx`` are ``Range(0, n, 1)`` unsqueezed onto axis 0 (batch), 2 (query) and
  3 (key). → ``mask_index = Cast(Cast(mask, bool), int32)`` (one Cast shared by all layers) and,
  with the causal leaf, ``unidirectional=1``.
* **classic additive masks** ``(1 - Cast(mask[:, None, None, :])) * fill``. → ``mask_index =
  Cast(mask, int32)``.
* **classic causal masks** (older GPT-2): ``Where(Slice(tril buffer)[..., :S, :S], scores,
  fill)`` with the buffer a constant lower-triangular matrix and the slice provably starting at
  ``[0, 0]``. → ``unidirectional=1``.

``fill`` must be a constant at most -1e4 and becomes ``mask_filter_value``, so that the fused op
fills masked scores exactly as the model does.

Equivalence guaranteed (beyond the float rounding of a different summation order):

* no mask, and the vmap form: the same outputs for every input on which the original model runs,
  with ``attention_mask`` of shape ``[batch, sequence]`` (onnxruntime rejects other shapes); any
  nonzero mask value means "attend", as in the model's Cast to bool. Fully masked rows (a batch
  whose mask is all zeros, or padding query positions under left padding with a causal mask) give
  the model's result too, because the fill value is the model's.
* classic additive mask: the same outputs for masks of 0s and 1s (other values make
  ``(1 - m) * fill`` something other than a mask; onnxruntime treats ``m > 0`` as attend).
* classic causal mask with a padding mask: rows whose every causally visible key is padding
  (padding query positions under left padding) may differ; all other positions are the same.

Not checked (assumed, as written by every exporter we know): that the ``Range`` lengths of the
vmap mask's batch, query and causal key indices are the batch size and sequence length of ``x``
(they come from ``Shape`` of the hidden states, which this rule cannot relate to ``x`` across
layers; the padding key index is checked against the mask's own length), and that an ``Expand``
in the mask chain only broadcasts to the scores' shape.

Reshape targets computed from intermediate values of the pattern (GPT-2 reads ``Shape`` of the
split q/k/v and of the transposed context) are taken into the match when they only feed the
pattern, so that the engine's "intermediate value read outside the match" check passes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx

from onnxforge.ir import Node, Value
from onnxforge.rules import MS_DOMAIN, Match, MatchFailed, RewriteContext, Rule

log = logging.getLogger(__name__)

_TP = onnx.TensorProto
#: Element types the fused op is used for, with their numpy dtypes.
FLOAT_TYPES: dict[int, type] = {_TP.FLOAT: np.float32, _TP.FLOAT16: np.float16}
#: A mask fill value must be at most this ("large negative": e^fill vanishes next to any score).
LARGE_NEGATIVE = -1e4
#: Ops of the integer shape computations that may be taken into a match (see module docstring).
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
_MAX_DEPTH = 24


# -- symbolic integers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dim:
    """An integer ``const + sum(coeff * symbol)``: a dimension in the shape evaluation."""

    const: int = 0
    terms: tuple[tuple[str, int], ...] = ()

    @staticmethod
    def sym(name: str) -> Dim:
        return Dim(0, ((name, 1),))

    @staticmethod
    def of(d: int | str | None, name: str) -> Dim:
        """A known int dimension, else the symbol ``name``."""
        return Dim(d) if isinstance(d, int) else Dim.sym(name)

    @property
    def is_const(self) -> bool:
        return not self.terms

    def __add__(self, other: Dim) -> Dim:
        acc = dict(self.terms)
        for k, c in other.terms:
            acc[k] = acc.get(k, 0) + c
        return Dim(self.const + other.const, tuple(sorted((k, c) for k, c in acc.items() if c)))

    def scaled(self, k: int) -> Dim:
        return Dim(self.const * k, tuple((s, c * k) for s, c in self.terms if c * k))

    def __sub__(self, other: Dim) -> Dim:
        return self + other.scaled(-1)

    def div_exact(self, k: int) -> Dim | None:
        if k == 0 or self.const % k or any(c % k for _, c in self.terms):
            return None
        return Dim(self.const // k, tuple((s, c // k) for s, c in self.terms))

    def __str__(self) -> str:
        parts = [f"{c}*{s}" if c != 1 else s for s, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return "+".join(parts)


Dims = tuple[Dim | None, ...]


def _fmt(dims: Sequence[Dim | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


class ShapeInts:
    """Symbolic evaluation of small integer tensors (shape computations).

    ``value(v)`` is ``(elements, is_scalar)`` with each element a :class:`Dim` or None (unknown),
    or None when ``v`` is not a 0-D/1-D integer computation this evaluator understands. Shapes
    of tensors come from :meth:`know` (the pattern's values, in terms of ``B``, ``S``, ...) or
    from fully static shape annotations.
    """

    def __init__(self, rc: RewriteContext) -> None:
        self.rc = rc
        self.known: dict[Value, Dims] = {}

    def know(self, v: Value | None, dims: Sequence[Dim | None]) -> None:
        if v is not None:
            self.known[v] = tuple(dims)

    def shape_of(self, v: Value | None) -> Dims | None:
        if v is None:
            return None
        if v in self.known:
            return self.known[v]
        s = v.shape()
        if s is None:
            return None
        return tuple(Dim(d) if isinstance(d, int) else None for d in s)

    def scalar(self, v: Value | None) -> Dim | None:
        r = self.value(v)
        if r is None or len(r[0]) != 1:
            return None
        return r[0][0]

    def value(self, v: Value | None, depth: int = 0) -> tuple[Dims, bool] | None:
        if v is None or depth > _MAX_DEPTH:
            return None
        c = self.rc.const(v)
        if c is not None:
            if c.dtype.kind not in "iu" or c.ndim > 1:
                return None
            return tuple(Dim(int(x)) for x in c.reshape(-1)), c.ndim == 0
        p = v.producer
        if p is None or not p.is_standard_domain():
            return None
        handler = getattr(self, f"_op_{p.op_type}", None)
        return None if handler is None else handler(p, depth + 1)

    def _op_Shape(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        dims = self.shape_of(p.input(0))
        if dims is None:
            return None
        start, end = int(p.attr("start", 0)), p.attr("end", None)
        return dims[start : (None if end is None else int(end))], False

    def _op_Gather(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        data = self.value(p.input(0), depth)
        idx = self.rc.const(p.input(1))
        if data is None or data[1] or idx is None or idx.ndim > 1 or int(p.attr("axis", 0)) != 0:
            return None
        n = len(data[0])
        picked: list[Dim | None] = []
        for i in idx.reshape(-1).tolist():
            if not -n <= i < n:
                return None
            picked.append(data[0][i])
        return tuple(picked), idx.ndim == 0

    def _op_Unsqueeze(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        x = self.value(p.input(0), depth)
        axes = _unsqueeze_axes(p, self.rc)
        if x is None or not x[1] or axes not in ([0], [-1]):
            return None
        return x[0], False

    def _op_Squeeze(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        x = self.value(p.input(0), depth)
        if x is None or x[1] or len(x[0]) != 1:
            return None
        return x[0], True

    def _op_Concat(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        out: list[Dim | None] = []
        for v in p.inputs:
            x = self.value(v, depth)
            if x is None or x[1]:
                return None
            out.extend(x[0])
        return tuple(out), False

    def _op_Slice(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        x = self.value(p.input(0), depth)
        params = [self.rc.const(p.input(i)) for i in range(1, 5)]
        if x is None or x[1] or params[0] is None or params[1] is None:
            return None
        if params[2] is not None and params[2].reshape(-1).tolist() not in ([0], [-1]):
            return None
        step = 1 if params[3] is None else int(params[3].reshape(-1)[0])
        start, end = int(params[0].reshape(-1)[0]), int(params[1].reshape(-1)[0])
        return x[0][slice(start, end, step)], False

    def _op_Cast(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        if int(p.attr("to", 0)) not in (_TP.INT64, _TP.INT32):
            return None
        return self.value(p.input(0), depth)

    def _op_Identity(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        return self.value(p.input(0), depth)

    def _binary(self, p: Node, depth: int) -> tuple[Dims, Dims, bool] | None:
        a, b = self.value(p.input(0), depth), self.value(p.input(1), depth)
        if a is None or b is None:
            return None
        xa, xb = a[0], b[0]
        if len(xa) == 1 and len(xb) != 1:
            xa = xa * len(xb)
        elif len(xb) == 1 and len(xa) != 1:
            xb = xb * len(xa)
        if len(xa) != len(xb):
            return None
        return xa, xb, a[1] and b[1]

    def _op_Add(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        return tuple(None if x is None or y is None else x + y for x, y in zip(r[0], r[1])), r[2]

    def _op_Sub(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        return tuple(None if x is None or y is None else x - y for x, y in zip(r[0], r[1])), r[2]

    def _op_Mul(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        out: list[Dim | None] = []
        for x, y in zip(r[0], r[1]):
            if x is not None and y is not None and y.is_const:
                out.append(x.scaled(y.const))
            elif x is not None and y is not None and x.is_const:
                out.append(y.scaled(x.const))
            else:
                out.append(None)
        return tuple(out), r[2]

    def _op_Div(self, p: Node, depth: int) -> tuple[Dims, bool] | None:
        r = self._binary(p, depth)
        if r is None:
            return None
        out = [
            x.div_exact(y.const) if x is not None and y is not None and y.is_const else None
            for x, y in zip(r[0], r[1])
        ]
        return tuple(out), r[2]


# -- small matching helpers ----------------------------------------------------------------------


def _unsqueeze_axes(node: Node, rc: RewriteContext) -> list[int] | None:
    """The axes of an Unsqueeze/Squeeze (input from opset 13, attribute before)."""
    if node.input(1) is not None:
        arr = rc.const(node.input(1))
        return None if arr is None else [int(a) for a in arr.reshape(-1)]
    axes = node.attr("axes", None)
    return None if axes is None else [int(a) for a in axes]


def _scalar_const(rc: RewriteContext, v: Value | None) -> float | None:
    arr = rc.const(v)
    if arr is None or arr.size != 1 or arr.dtype.kind not in "fiu":
        return None
    return float(arr.reshape(-1)[0])


def _scale_factor(
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


def _perm(node: Node, rank: int) -> tuple[int, ...]:
    perm = node.attr("perm", None)
    return tuple(int(p) for p in perm) if perm is not None else tuple(reversed(range(rank)))


def _elem_type(v: Value | None) -> int | None:
    return v.elem_type() if v is not None else None


# -- pattern pieces ------------------------------------------------------------------------------


@dataclass
class Projection:
    """One of q, k, v: ``x @ weight + bias`` produced as ``out`` (shape ``[B, S, cols]``)."""

    x: Value
    weight: np.ndarray
    bias: np.ndarray | None
    out: Value
    nodes: list[Node]
    #: Values of shape [B, S, n] (for the shape evaluation): (value, n).
    bs_values: list[tuple[Value, int]] = field(default_factory=list)
    #: The packed Conv1D path: (flatten Reshape, unflatten Reshape, Gemm, packed columns).
    conv1d: tuple[Node, Node, Node, int] | None = None


@dataclass
class Head:
    """A projection reshaped to heads: ``Reshape → [scalar Mul/Div]* → Transpose*``."""

    proj: Projection
    reshape: Node
    scale: float
    nodes: list[Node]
    #: Values after the Reshape with the perm taking [B, S, N, d] to their layout.
    laid_out: list[tuple[Value, tuple[int, ...]]]
    #: Values between the projection and the Reshape ([B, S, cols]).
    pre: list[Value]


@dataclass
class MaskSpec:
    """What the scores' masking amounts to."""

    #: The [batch, sequence] tensor whose nonzero entries mean "attend" (None: no padding mask).
    source: Value | None = None
    causal: bool = False
    fill: float | None = None
    #: The Slice of a causal buffer, whose bounds are checked once S is known.
    tril_slice: Node | None = None


@dataclass
class Scores:
    qk: Node
    scale: float
    mask: MaskSpec
    nodes: list[Node]
    values: list[Value]


# -- the rule ------------------------------------------------------------------------------------


class AttentionFusion(Rule):
    """Exported multi-head self-attention → ``com.microsoft::Attention`` (see the module
    docstring for the patterns and the equivalence guaranteed)."""

    name = "ort-attention"
    summary = "Fuse exported BERT/ViT/GPT-2 self-attention into onnxruntime's Attention contrib op."
    anchors: ClassVar[tuple[str, ...]] = ("Reshape",)
    min_opset = 11

    # -- match -----------------------------------------------------------------------------------
    def match(self, node: Node, rc: RewriteContext) -> Match:
        ctx_t = rc.producer(node.input(0), "Transpose", "attention output Reshape input")
        if _perm(ctx_t, 4) != (0, 2, 1, 3):
            raise MatchFailed(f"context Transpose perm is {list(_perm(ctx_t, 4))}, not [0, 2, 1, 3]")
        ctx_mm = rc.producer(ctx_t.input(0), "MatMul", "context Transpose input")
        softmax = rc.producer(ctx_mm.input(0), "Softmax", "context MatMul left operand")
        self._check_softmax(softmax, rc)
        v_head = self._head(ctx_mm.input(1), (0, 2, 1, 3), rc, "V", scalable=False)
        scores = self._scores(softmax.input(0), rc)
        q_head = self._head(scores.qk.input(0), (0, 2, 1, 3), rc, "Q", scalable=True)
        k_head = self._head(scores.qk.input(1), (0, 2, 3, 1), rc, "K", scalable=True)
        heads = (q_head, k_head, v_head)
        x = q_head.proj.x
        if any(h.proj.x is not x for h in heads):
            raise MatchFailed("Q, K and V are not projections of the same input")
        dtype = self._check_types(x, heads)
        num_heads, head_size = self._check_shapes(node, ctx_t, ctx_mm, softmax, scores, heads, rc)
        scale = q_head.scale * k_head.scale * scores.scale
        if scale == 0.0:
            raise MatchFailed("the attention scale is zero")
        nodes = _unique([node, ctx_t, ctx_mm, softmax, *scores.nodes, *(n for h in heads for n in h.nodes)])
        nodes = _absorb_shape_readers(nodes, node)
        return Match(
            node,
            nodes,
            {
                "x": x,
                "heads": heads,
                "num_heads": num_heads,
                "head_size": head_size,
                "scale": scale,
                "mask": scores.mask,
                "dtype": dtype,
            },
        )

    @staticmethod
    def _check_softmax(softmax: Node, rc: RewriteContext) -> None:
        axis = int(softmax.attr("axis", -1 if rc.opset >= 13 else 1))
        if axis not in (-1, 3):
            raise MatchFailed(f"Softmax axis is {axis}, not the last axis")

    # -- q/k/v heads ------------------------------------------------------------------------------
    def _head(
        self, v: Value | None, perm: tuple[int, ...], rc: RewriteContext, what: str, *, scalable: bool
    ) -> Head:
        """Walk back from the head value to its Reshape through Transposes (composing to
        ``perm``) and scalar Mul/Div (when ``scalable``), then to the projection."""
        chain: list[Node] = []
        scale = 1.0
        cur = v
        for _ in range(_MAX_DEPTH):
            p = cur.producer if cur is not None else None
            if p is None or p.graph is not rc.graph:
                raise MatchFailed(f"{what} head comes from no node")
            if p.op_type == "Reshape" and p.is_standard_domain():
                break
            if p.op_type == "Transpose" and p.is_standard_domain():
                chain.append(p)
                cur = p.input(0)
                continue
            sf = _scale_factor(p, rc, None, 4) if scalable else None
            if sf is None:
                raise MatchFailed(
                    f"{what} head comes from {p.op_type}, not Transpose/Reshape"
                    + (" or a scalar Mul/Div" if scalable else "")
                )
            chain.append(p)
            cur, f = sf
            scale *= f
        else:
            raise MatchFailed(f"{what} head chain is too long")
        reshape = p
        laid_out: list[tuple[Value, tuple[int, ...]]] = [(reshape.output(0), (0, 1, 2, 3))]  # type: ignore[list-item]
        acc: tuple[int, ...] = (0, 1, 2, 3)
        for n in reversed(chain):
            if n.op_type == "Transpose":
                tp = _perm(n, 4)
                if sorted(tp) != [0, 1, 2, 3]:
                    raise MatchFailed(f"{what} Transpose perm {list(tp)} is not a rank-4 permutation")
                acc = tuple(acc[i] for i in tp)
            laid_out.append((n.output(0), acc))  # type: ignore[arg-type]
        if acc != perm:
            raise MatchFailed(f"{what} heads are transposed with {list(acc)}, not {list(perm)}")
        pre: list[Value] = []
        pre_nodes: list[Node] = []
        cur = reshape.input(0)
        while scalable:
            p = cur.producer if cur is not None else None
            sf = _scale_factor(p, rc, None, 3) if p is not None else None
            if sf is None:
                break
            pre.append(cur)  # type: ignore[arg-type]
            pre_nodes.append(p)  # type: ignore[arg-type]
            cur, f = sf
            scale *= f
        proj = self._projection(cur, rc, what)
        return Head(proj, reshape, scale, [reshape, *chain, *pre_nodes, *proj.nodes], laid_out, pre)

    # -- projections ------------------------------------------------------------------------------
    def _projection(self, v: Value | None, rc: RewriteContext, what: str) -> Projection:
        p = v.producer if v is not None else None
        if p is not None and p.op_type == "Split" and p.is_standard_domain():
            return self._split_projection(p, v, rc, what)  # type: ignore[arg-type]
        if p is not None and p.op_type == "Slice" and p.is_standard_domain():
            return self._slice_projection(p, v, rc, what)  # type: ignore[arg-type]
        return self._linear(v, rc, what)

    def _linear(self, v: Value | None, rc: RewriteContext, what: str) -> Projection:
        """``MatMul(x, W) [+ b]`` or the Conv1D form ``Reshape(Gemm(Reshape(x), W, b))``."""
        p = rc.producer(v, ("Add", "MatMul", "Reshape"), f"{what} projection")
        if p.op_type == "Reshape":
            return self._conv1d(p, rc, what)
        nodes: list[Node] = []
        bias: np.ndarray | None = None
        mm_out = v
        if p.op_type == "Add":
            mm_out, bias = self._bias_add(p, rc, what)
            nodes.append(p)
        mm = rc.producer(mm_out, "MatMul", f"{what} projection")
        w = rc.require_const(mm.input(1), f"{what} weight")
        if w.ndim != 2:
            raise MatchFailed(f"{what} weight is {w.ndim}-D, not 2-D")
        x = mm.input(0)
        if x is None or rc.const(x) is not None:
            raise MatchFailed(f"{what} projection input is missing or constant")
        if bias is not None and bias.size != w.shape[1]:
            raise MatchFailed(f"{what} bias has {bias.size} values for {w.shape[1]} columns")
        nodes.append(mm)
        out = v
        assert out is not None
        bs = [(mm.output(0), int(w.shape[1])), (out, int(w.shape[1]))]
        return Projection(x, w, bias, out, nodes, bs)  # type: ignore[arg-type]

    @staticmethod
    def _bias_add(add: Node, rc: RewriteContext, what: str) -> tuple[Value, np.ndarray]:
        a, b = add.input(0), add.input(1)
        for data, c in ((a, b), (b, a)):
            arr = rc.const(c)
            if arr is not None and data is not None and rc.const(data) is None:
                if arr.ndim > 3 or any(d != 1 for d in arr.shape[:-1]):
                    raise MatchFailed(f"{what} bias of shape {list(arr.shape)} is not a vector")
                return data, arr.reshape(-1)
        raise MatchFailed(f"{what} bias is not a constant")

    def _conv1d(self, unflat: Node, rc: RewriteContext, what: str) -> Projection:
        gemm = rc.producer(unflat.input(0), "Gemm", f"{what} projection Reshape input")
        flat = rc.producer(gemm.input(0), "Reshape", "Gemm input")
        if int(gemm.attr("transA", 0)):
            raise MatchFailed("Gemm has transA=1")
        w = rc.require_const(gemm.input(1), f"{what} weight")
        if w.ndim != 2:
            raise MatchFailed(f"{what} weight is not 2-D")
        if int(gemm.attr("transB", 0)):
            w = w.T
        w = (
            w * np.asarray(gemm.attr("alpha", 1.0), dtype=w.dtype)
            if float(gemm.attr("alpha", 1.0)) != 1.0
            else w
        )
        bias = None
        if gemm.input(2) is not None:
            c = rc.require_const(gemm.input(2), f"{what} bias")
            if c.size != w.shape[1] or any(d != 1 for d in c.shape[:-1]):
                raise MatchFailed(f"{what} Gemm bias of shape {list(c.shape)} is not a [{w.shape[1]}] vector")
            beta = float(gemm.attr("beta", 1.0))
            bias = c.reshape(-1) * np.asarray(beta, dtype=c.dtype) if beta != 1.0 else c.reshape(-1)
        x = flat.input(0)
        if x is None or rc.const(x) is not None:
            raise MatchFailed(f"{what} projection input is missing or constant")
        out = unflat.output(0)
        assert out is not None
        cols = int(w.shape[1])
        return Projection(
            x, w, bias, out, [unflat, gemm, flat], [(out, cols)], conv1d=(flat, unflat, gemm, cols)
        )

    def _split_projection(self, split: Node, v: Value, rc: RewriteContext, what: str) -> Projection:
        packed = self._linear(split.input(0), rc, f"packed {what}")
        cols = packed.weight.shape[1]
        axis = int(split.attr("axis", 0))
        if axis not in (-1, 2):
            raise MatchFailed(f"{what} Split axis is {axis}, not the last axis")
        sizes = rc.const(split.input(1)) if split.input(1) is not None else split.attr("split", None)
        outs = [o for o in split.outputs]
        if sizes is None:
            if int(split.attr("num_outputs", len(outs))) != len(outs) or cols % len(outs):
                raise MatchFailed("Split sizes are not known")
            sizes = [cols // len(outs)] * len(outs)
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        if sum(sizes) != cols or len(sizes) != len(outs):
            raise MatchFailed(f"Split sizes {sizes} do not cover the {cols} packed columns")
        i = outs.index(v)
        start = sum(sizes[:i])
        return self._columns(packed, v, start, start + sizes[i], split)

    def _slice_projection(self, sl: Node, v: Value, rc: RewriteContext, what: str) -> Projection:
        packed = self._linear(sl.input(0), rc, f"packed {what}")
        cols = packed.weight.shape[1]
        starts, ends = rc.const(sl.input(1)), rc.const(sl.input(2))
        axes, steps = rc.const(sl.input(3)), rc.const(sl.input(4))
        if starts is None or ends is None or starts.size != 1 or ends.size != 1:
            raise MatchFailed(f"{what} Slice bounds are not constant")
        if axes is None or axes.reshape(-1).tolist() not in ([-1], [2]):
            raise MatchFailed(f"{what} Slice is not on the last axis")
        if steps is not None and steps.reshape(-1).tolist() != [1]:
            raise MatchFailed(f"{what} Slice step is not 1")
        rng = range(cols)[slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]))]
        if len(rng) == 0:
            raise MatchFailed(f"{what} Slice is empty")
        return self._columns(packed, v, rng.start, rng.stop, sl)

    @staticmethod
    def _columns(packed: Projection, out: Value, start: int, stop: int, node: Node) -> Projection:
        bias = None if packed.bias is None else packed.bias[start:stop]
        bs = [*packed.bs_values, (out, stop - start)]
        return Projection(
            packed.x, packed.weight[:, start:stop], bias, out, [node, *packed.nodes], bs, conv1d=packed.conv1d
        )

    # -- scores and masks -------------------------------------------------------------------------
    def _scores(self, v: Value | None, rc: RewriteContext) -> Scores:
        nodes: list[Node] = []
        values: list[Value] = []
        mask = MaskSpec()
        p = rc.producer(v, ("Add", "Where", "Mul", "Div", "MatMul"), "Softmax input")
        if p.op_type == "Add":
            v, mask = self._masked_add(p, rc)
            nodes.append(p)
            values.append(p.output(0))  # type: ignore[arg-type]
            p = rc.producer(v, ("Where", "Mul", "Div", "MatMul"), "masked scores")
        if p.op_type == "Where":
            v, causal_fill, tril = self._causal_where(p, rc)
            if mask.fill is not None and mask.fill != causal_fill:
                raise MatchFailed(
                    f"the causal fill {causal_fill:g} differs from the padding fill {mask.fill:g}"
                )
            mask.causal, mask.fill, mask.tril_slice = True, causal_fill, tril
            nodes.append(p)
            values.append(p.output(0))  # type: ignore[arg-type]
            p = rc.producer(v, ("Mul", "Div", "MatMul"), "causally masked scores")
        scale = 1.0
        for _ in range(_MAX_DEPTH):
            if p.op_type == "MatMul":
                break
            sf = _scale_factor(p, rc, None, 4)
            if sf is None:
                raise MatchFailed(
                    f"scores are scaled by {p.op_type} with a non-scalar or non-constant operand"
                )
            nodes.append(p)
            values.append(p.output(0))  # type: ignore[arg-type]
            v, f = sf
            scale *= f
            p = rc.producer(v, ("Mul", "Div", "MatMul"), "scores")
        nodes.append(p)
        values.append(p.output(0))  # type: ignore[arg-type]
        return Scores(p, scale, mask, nodes, values)

    def _masked_add(self, add: Node, rc: RewriteContext) -> tuple[Value, MaskSpec]:
        """Which operand of the mask Add is the mask, and what it is."""
        a, b = add.input(0), add.input(1)
        orders = sorted(((a, b), (b, a)), key=lambda o: _scores_likeness(o[0]))
        reasons: list[str] = []
        for scores, m in orders:
            if _scores_likeness(scores) > 1 or scores is None:
                continue
            try:
                return scores, self._additive_mask(m, rc)
            except MatchFailed as e:
                reasons.append(e.reason)
        raise MatchFailed(reasons[0] if reasons else "neither operand of the mask Add comes from the scores")

    def _additive_mask(self, m: Value | None, rc: RewriteContext) -> MaskSpec:
        p = m.producer if m is not None else None
        if p is not None and p.op_type == "Where" and p.is_standard_domain():
            return self._vmap_mask(p, rc)
        if p is not None and p.op_type == "Mul" and p.is_standard_domain():
            return self._classic_mask(p, rc)
        got = "a constant" if rc.const(m) is not None else (p.op_type if p is not None else "a graph input")
        raise MatchFailed(f"unrecognized attention mask form (the added mask comes from {got})")

    def _vmap_mask(self, where: Node, rc: RewriteContext) -> MaskSpec:
        zero, fill = _scalar_const(rc, where.input(1)), _scalar_const(rc, where.input(2))
        if zero != 0.0:
            raise MatchFailed("mask Where does not give 0 where attending")
        fill = _check_fill(fill)
        cond = where.input(0)
        p = cond.producer if cond is not None else None
        if p is not None and p.op_type == "Expand":
            cond = p.input(0)
        ints = ShapeInts(rc)
        source, causal = self._condition(cond, rc, ints, 0)
        if source is None and not causal:
            raise MatchFailed("the mask condition is always true (an all-zero mask is not fused)")
        return MaskSpec(source=source, causal=causal, fill=fill)

    def _condition(
        self, v: Value | None, rc: RewriteContext, ints: ShapeInts, depth: int
    ) -> tuple[Value | None, bool]:
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
            s1, c1 = self._condition(p.input(0), rc, ints, depth + 1)
            s2, c2 = self._condition(p.input(1), rc, ints, depth + 1)
            if s1 is not None and s2 is not None:
                raise MatchFailed("mask condition has two padding lookups")
            return (s1 if s1 is not None else s2), c1 or c2
        if p.op_type in ("GreaterOrEqual", "LessOrEqual"):
            return None, self._comparison(p, rc)
        return self._padding_lookup(v, rc, ints), False

    def _comparison(self, p: Node, rc: RewriteContext) -> bool:
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

    def _padding_lookup(self, v: Value, rc: RewriteContext, ints: ShapeInts) -> Value:
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
        if 2 not in (_rank(bool_mask.input(0)), _rank(mask)):
            raise MatchFailed("the attention mask is not known to be 2-D")
        one_column = self._flat_layout(flat, rc)
        if one_column or final_target is not None:
            tp = final_target.producer if final_target is not None else None
            if tp is None or tp.op_type != "Shape" or tp.input(0) is not index or tp.attributes:
                raise MatchFailed("the gathered mask is not reshaped to the index shape")
        bm, sm = Dim.sym("mask_batch"), Dim.sym("mask_sequence")
        for val in (mask, bool_mask.input(0)):
            ints.know(val, (bm, sm))
        self._padding_index(index, rc, ints, sm)
        assert mask is not None
        return mask

    @staticmethod
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

    @staticmethod
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

    def _classic_mask(self, mul: Node, rc: RewriteContext) -> MaskSpec:
        """``(1 - Cast(Unsqueeze(mask, [1, 2]))) * fill``."""
        for sub_v, f_v in ((mul.input(0), mul.input(1)), (mul.input(1), mul.input(0))):
            sub = sub_v.producer if sub_v is not None else None
            if sub is None or sub.op_type != "Sub" or rc.const(f_v) is None:
                continue
            fill = _check_fill(_scalar_const(rc, f_v))
            if _scalar_const(rc, sub.input(0)) != 1.0:
                raise MatchFailed("mask is not (1 - mask) * fill")
            source, positions = _unsqueezed(sub.input(1), rc)
            if positions != (0, 3):
                raise MatchFailed(f"mask axes land on {list(positions)} of the scores, not [0, 3]")
            return MaskSpec(source=source, fill=fill)
        raise MatchFailed("mask Mul is not (1 - mask) * constant")

    def _causal_where(self, where: Node, rc: RewriteContext) -> tuple[Value, float, Node]:
        """``Where(tril_buffer[..., 0:S, 0:S], scores, fill)``."""
        fill = _check_fill(_scalar_const(rc, where.input(2)))
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

    # -- types and shapes -------------------------------------------------------------------------
    @staticmethod
    def _check_types(x: Value, heads: Sequence[Head]) -> type:
        """The dtype of the input (of the weights when the input's is not annotated: MatMul and
        Gemm take one type for both); float32 or float16 only."""
        et = _elem_type(x)
        if et is None:
            et = onnx.helper.np_dtype_to_tensor_dtype(heads[0].proj.weight.dtype)
        if et not in FLOAT_TYPES:
            raise MatchFailed(f"input dtype is {_TP.DataType.Name(et)}, not float32/float16")
        dtype = FLOAT_TYPES[et]
        for h in heads:
            if h.proj.weight.dtype != dtype or (h.proj.bias is not None and h.proj.bias.dtype != dtype):
                raise MatchFailed("weights or biases do not have the input's dtype")
        return dtype

    def _check_shapes(
        self,
        anchor: Node,
        ctx_t: Node,
        ctx_mm: Node,
        softmax: Node,
        scores: Scores,
        heads: Sequence[Head],
        rc: RewriteContext,
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
            self._check_projection(h.proj, ints, b, s, h_in)
        nd: set[tuple[int, int]] = set()
        for h, what in zip(heads, "QKV"):
            cols = int(h.proj.weight.shape[1])
            for val in h.pre:
                ints.know(val, (b, s, Dim(cols)))
            n, d = self._head_split(h.reshape, ints, cols, what)
            nd.add((n, d))
            dims = (b, s, Dim(n), Dim(d))
            _check_reshape(h.reshape, ints, (b, s, Dim(cols)), dims, f"{what} head Reshape")
            for val, perm in h.laid_out:
                ints.know(val, tuple(dims[i] for i in perm))
        if len(nd) != 1:
            raise MatchFailed(f"Q, K and V are split into different heads {sorted(nd)}")
        ((n, d),) = nd
        hn, hd = Dim(n), Dim(d)
        for val in scores.values:
            ints.know(val, (b, hn, s, s))
        ints.know(softmax.output(0), (b, hn, s, s))
        ints.know(ctx_mm.output(0), (b, hn, s, hd))
        ints.know(ctx_t.output(0), (b, s, hn, hd))
        _check_reshape(anchor, ints, (b, s, hn, hd), (b, s, Dim(n * d)), "attention output Reshape")
        if scores.mask.tril_slice is not None:
            _check_tril_bounds(scores.mask.tril_slice, ints, s)
        return n, d

    @staticmethod
    def _check_projection(proj: Projection, ints: ShapeInts, b: Dim, s: Dim, h_in: Dim) -> None:
        rows = int(proj.weight.shape[0])
        if h_in.is_const and h_in.const != rows:
            raise MatchFailed(f"input hidden size {h_in} does not match the weight rows {rows}")
        if proj.conv1d is not None:
            flat, unflat, gemm, full = proj.conv1d
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
                shown = _fmt(target[0]) if target is not None else "unknown"
                raise MatchFailed(f"the Conv1D flattening Reshape target {shown} is not [-1, {h_in}]")
            ints.know(flat.output(0), (None, h_in))
            ints.know(gemm.output(0), (None, Dim(full)))
            _check_reshape(unflat, ints, (None, Dim(full)), (b, s, Dim(full)), "Conv1D output Reshape")
        for val, cols in proj.bs_values:
            ints.know(val, (b, s, Dim(cols)))

    @staticmethod
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
        raise MatchFailed(f"{what} heads/head size cannot be read from the Reshape target {_fmt(target[0])}")

    # -- rewrite ----------------------------------------------------------------------------------
    def rewrite(self, match: Match, rc: RewriteContext) -> None:
        heads: tuple[Head, Head, Head] = match["heads"]
        dtype = match["dtype"]
        weight = np.concatenate([h.proj.weight for h in heads], axis=1).astype(dtype)
        bias = np.concatenate(
            [h.proj.bias if h.proj.bias is not None else np.zeros(h.proj.weight.shape[1]) for h in heads]
        ).astype(dtype)
        base = match.anchor.name or "attention"
        inputs: list[Value | None] = [
            match["x"],
            rc.constant(weight, f"{base}_qkv_weight"),
            rc.constant(bias, f"{base}_qkv_bias"),
        ]
        mask: MaskSpec = match["mask"]
        attrs: dict[str, object] = {"num_heads": int(match["num_heads"])}
        if mask.source is not None:
            inputs.append(_mask_index(rc, mask.source))
        if mask.causal:
            attrs["unidirectional"] = 1
        if mask.fill is not None:
            attrs["mask_filter_value"] = float(mask.fill)
        scale = float(match["scale"])
        if np.float32(scale) != np.float32(1.0 / math.sqrt(float(match["head_size"]))):
            attrs["scale"] = scale
        node = rc.add("Attention", inputs, domain=MS_DOMAIN, attrs=attrs, name=f"{base}_attention")
        rc.replace(match.anchor.output(0), node.output(0))
        log.debug("fused attention %s: %d heads of %d", base, match["num_heads"], match["head_size"])


# -- module helpers -------------------------------------------------------------------------------


def _rank(v: Value | None) -> int | None:
    s = v.shape() if v is not None else None
    return None if s is None else len(s)


def _unique(nodes: Iterable[Node]) -> list[Node]:
    return list(dict.fromkeys(nodes))


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
        axes = _unsqueeze_axes(p, rc)
        if axes is None:
            raise MatchFailed("index Unsqueeze axes are not constant")
        chain.append(axes)
        cur = p.input(0)
    r = rc.producer(cur, "Range", "mask index")
    if _scalar_const(rc, r.input(0)) != 0 or _scalar_const(rc, r.input(2)) != 1:
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
            axes = _unsqueeze_axes(p, rc)
            if axes is None:
                raise MatchFailed("mask Unsqueeze axes are not constant")
            chain.append(axes)
        cur = p.input(0)
    if cur is None or _rank(cur) != 2:
        raise MatchFailed("the attention mask is not known to be 2-D")
    rank, positions = 2, [0, 1]
    for axes in reversed(chain):
        new = [_unsqueeze_position(rank, p, axes)[1] for p in positions]
        rank += len(axes)
        positions = new
    if rank != 4:
        raise MatchFailed(f"the attention mask is unsqueezed to rank {rank}, not 4")
    return cur, tuple(positions)


def _check_reshape(node: Node, ints: ShapeInts, in_dims: Dims, expected: Dims, what: str) -> None:
    """The target of ``node`` gives ``expected`` for an input of ``in_dims`` (0 copies an input
    dim unless allowzero; a single -1 is implied by the element count)."""
    target = ints.value(node.input(1))
    if target is None:
        raise MatchFailed(f"{what} target cannot be evaluated")
    dims = target[0]
    if len(dims) != len(expected):
        raise MatchFailed(f"{what} target {_fmt(dims)} has rank {len(dims)}, not {len(expected)}")
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
            raise MatchFailed(f"{what} target {_fmt(dims)} is not {_fmt(expected)}")
    if minus_one > 1:
        raise MatchFailed(f"{what} target has more than one -1")


def _check_tril_bounds(sl: Node, ints: ShapeInts, s: Dim) -> None:
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
        raise MatchFailed(f"causal mask Slice ends {_fmt(ends[0])} are not the sequence length {s}")


def _absorb_shape_readers(nodes: list[Node], anchor: Node) -> list[Node]:
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


def _mask_index(rc: RewriteContext, source: Value) -> Value:
    """``Cast(source, int32)``, shared by every Attention reading the same mask."""
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
            return user.output(0)  # type: ignore[return-value]
    cast = rc.add("Cast", [source], attrs={"to": _TP.INT32}, name=f"{source.name}_mask_index")
    out = cast.output(0)
    assert out is not None
    shape = source.shape()
    out.type = onnx.helper.make_tensor_type_proto(_TP.INT32, None if shape is None else list(shape))
    return out
