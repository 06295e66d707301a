"""Cost formulas of fused attention: onnxruntime's ``Attention``, ``MultiHeadAttention``,
``GroupQueryAttention`` (com.microsoft) and ONNX ``Attention`` (opset 23).

With ``B`` batch, ``S`` query length, ``L`` key length (past included), ``Hq``/``Hv`` the
query/value hidden sizes and ``n`` heads:

* scores ``Q K^T``: ``B * S * L * Hq`` MACs; context ``P V``: ``B * S * L * Hv`` MACs;
* the packed input projection of com.microsoft ``Attention``: ``B * S * D_in * D_qkv`` MACs;
* softmax over ``B * n * S * L`` scores: 5 operations per score, plus 1 for the scaling, plus
  the bias adds of the projection.
"""

from __future__ import annotations

from onnxforge.kernels.costs.formula import (
    MATMUL,
    MS_DOMAIN,
    CostCall,
    FormulaSet,
    MissingShape,
    OpCost,
    TensorInfo,
)

#: The cost formulas this module defines (collected by onnxforge.kernels.table).
FORMULAS = FormulaSet()

_SOFTMAX = 5 + 1  # softmax + scaling, per score


def _heads(call: CostCall, hidden: int) -> tuple[int, int]:
    """(number of heads, head size) for a query hidden size."""
    n = int(call.attr("num_heads", 0) or call.attr("q_num_heads", 0) or 1)
    return n, max(hidden // max(n, 1), 1)


def _products(rows: int, length: int, hq: int, hv: int, heads: int) -> OpCost:
    """Scores and context products of ``rows = B * S`` queries over ``length`` keys."""
    macs = rows * length * (hq + hv)
    return OpCost(macs, 2 * macs + _SOFTMAX * rows * heads * length)


@FORMULAS.register("Attention", kind=MATMUL, domain=MS_DOMAIN)
def _ms_attention(call: CostCall) -> OpCost:
    x = call.require_input(0)
    w = call.require_input(1)
    y = call.require_output(0)
    if x.rank != 3 or w.rank != 2:
        raise MissingShape("Attention: input must be [B, S, D] and weights [D, D_qkv]")
    b, s, d_in = x.shape
    sizes = [int(v) for v in (call.attr("qkv_hidden_sizes") or [])]
    hq, hv = (sizes[0], sizes[2]) if len(sizes) == 3 else (w.shape[1] // 3, w.shape[1] // 3)
    present = call.output(1)
    length = present.shape[3] if present is not None and present.rank == 5 else s
    past = call.input(4)
    if present is None and past is not None and past.rank == 5:
        length = s + past.shape[3]
    heads, _ = _heads(call, hq)
    proj = b * s * d_in * w.shape[1]
    bias = b * s * w.shape[1] if call.input(2) is not None else 0
    core = _products(b * s, length, hq, hv or y.shape[-1], heads)
    return OpCost(proj, 2 * proj + bias) + core


def _kv_length(key: TensorInfo | None, fallback: int) -> int:
    if key is None:
        return fallback
    if key.rank == 4:  # [B, heads, L, head]
        return key.shape[2]
    if key.rank == 3:  # [B, L, hidden]
        return key.shape[1]
    return fallback


@FORMULAS.register("MultiHeadAttention", kind=MATMUL, domain=MS_DOMAIN)
def _ms_mha(call: CostCall) -> OpCost:
    q = call.require_input(0)
    y = call.require_output(0)
    if q.rank < 3:
        raise MissingShape("MultiHeadAttention: query rank < 3")
    b, s = q.shape[0], q.shape[1]
    hv = y.shape[-1]
    if call.input(1) is None and q.rank == 5:  # packed [B, S, n, 3, head]
        hq = q.shape[2] * q.shape[4]
        length = s
    else:
        hq = q.numel // (b * s)
        length = _kv_length(call.input(1), s)
    present = call.output(1)
    if present is not None and present.rank == 4:
        length = present.shape[2]
    heads, _ = _heads(call, hq)
    bias = b * s * (hq + 2 * hv) if call.input(3) is not None else 0
    return _products(b * s, length, hq, hv, heads) + OpCost(0, bias)


@FORMULAS.register("GroupQueryAttention", kind=MATMUL, domain=MS_DOMAIN)
def _ms_gqa(call: CostCall) -> OpCost:
    q = call.require_input(0)
    y = call.require_output(0)
    if q.rank != 3 or y.rank != 3:
        raise MissingShape("GroupQueryAttention: query and output must be [B, S, hidden]")
    b, s, hv = y.shape
    present = call.output(1)
    length = present.shape[2] if present is not None and present.rank == 4 else _kv_length(call.input(1), s)
    hq = hv  # query hidden = num_heads * head_size = output hidden
    heads, _ = _heads(call, hq)
    return _products(b * s, length, hq, hv, heads)


@FORMULAS.register("Attention", kind=MATMUL)
def _onnx_attention(call: CostCall) -> OpCost:
    q = call.require_input(0)
    k = call.require_input(1)
    y = call.require_output(0)
    if q.rank == 4:  # [B, n, S, head]
        b, heads, s, head = q.shape
        rows, hq = b * s, heads * head
        length = k.shape[2]
        hv = y.numel // rows
    elif q.rank == 3:  # [B, S, hidden]
        b, s, hq = q.shape
        rows = b * s
        heads, _ = _heads(call, hq)
        length = k.shape[1]
        hv = y.shape[2]
    else:
        raise MissingShape("Attention: query rank must be 3 or 4")
    present = call.output(1)
    if present is not None and present.rank == 4:
        length = present.shape[2]
    return _products(rows, length, hq, hv, heads)
