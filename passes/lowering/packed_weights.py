"""Lowering codebook weights to onnxruntime's packed-weight kernels: :class:`LowerPackedWeights`.

Standard ONNX has no lookup-table op: onnxruntime folds ``Gather(codebook, Cast(indices))`` back
into a dense fp32 weight when it creates a session, so a codebook model is small on disk but
not in memory. For targets that take onnxruntime's contrib ops (``cpu``, ``cuda``) this pass
rewrites the decoded weights into the packed forms onnxruntime keeps packed in memory:

* a weight read by ``MatMul`` (input B) or ``Gemm`` (B, without ``transA``) becomes
  ``com.microsoft::MatMulNBits`` (layout in :mod:`onnxforge.kernels.contrib`): the decoded
  weight is quantized again in blocks of ``block_size`` along K, asymmetric, with ``bits`` 4
  (codebooks of up to 16 entries) or 8 (larger ones); a Gemm's ``alpha`` is folded into the
  weight and its ``beta * C`` becomes the bias input when ``C`` is a constant row.
* an embedding table gathered by row (``Gather(codebook, Cast(Gather(indices, ids)))``, what
  weight sharing writes for ``Gather`` readers) becomes ``com.microsoft::GatherBlockQuantized``
  over the ids, blocked along the hidden axis.

The re-quantization is lossy: a block of 32 weights drawn from 16 codebook values is fitted by
a 16-level affine grid (the scale that fits best among a few shrink factors of the block's
range, as the int4 pass does). Exact zeros stay exact (the zero point is an integer). The
report (``ctx.records["packed-weights"]``) gives each weight's SQNR against the codebook
weight it replaced; the budget belongs to the passes before (weight sharing): this pass is a
lowering, chosen by the target.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from onnxforge.ir import PROVENANCE_KEY, Graph, Model, Node, Value
from onnxforge.ir.constants import add_constant, constant_value
from onnxforge.kernels.contrib import MS_DOMAIN, pack_bits
from onnxforge.passes.cleanup.dead_code import DeadCodeElimination
from onnxforge.passes.compression.codebook import decoded_weight, read_codebook
from onnxforge.passmanager import Pass, PassContext, PassOptions, PassResult
from onnxforge.tables import format_table

log = logging.getLogger(__name__)

REPORT_KEY = "packed-weights"
PROVENANCE = "lower-packed-weights"
#: Shrink factors of the block range tried for each block.
_FACTORS = (1.0, 0.95, 0.9, 0.85, 0.8)


@dataclass(frozen=True)
class PackedWeightsOptions(PassOptions):
    """``block_size``: weights per scale (a power of two >= 16). ``bits``: 0 picks 4 for
    codebooks of up to 16 entries and 8 for larger ones; 4 or 8 forces it. ``matmuls`` and
    ``embeddings`` choose what is lowered."""

    block_size: int = 32
    bits: int = 0
    matmuls: bool = True
    embeddings: bool = True

    def validate(self) -> None:
        b = self.block_size
        if isinstance(b, bool) or b < 16 or b & (b - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {b!r}")
        if self.bits not in (0, 4, 8):
            raise ValueError(f"bits must be 0 (from the codebook), 4 or 8, got {self.bits}")


@dataclass
class LoweredWeight:
    name: str
    op: str
    bits: int
    sqnr_db: float
    bytes_after: int


@dataclass
class PackedWeightsReport:
    weights: list[LoweredWeight] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"weights": [vars(w) for w in self.weights], "skipped": self.skipped}

    def summary_lines(self) -> list[str]:
        rows = [[w.name, w.op, str(w.bits), f"{w.sqnr_db:.1f}", str(w.bytes_after)] for w in self.weights]
        out = ["packed weights (onnxruntime keeps them packed in memory):"]
        out += format_table(["weight", "op", "bits", "SQNR dB vs codebook", "bytes"], rows, left=(1,))
        out += [f"skipped {k}: {v}" for k, v in self.skipped.items()]
        return out


def quantize_blocks(w_nk: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blockwise asymmetric quantization along the last axis of ``w`` ``[N, K]``: codes uint8
    ``[N, blocks, block]`` (K zero-padded), scales float32 ``[N, blocks]``, zero points uint8
    ``[N, blocks]``."""
    n, k = w_nk.shape
    blocks = math.ceil(k / block)
    x = np.zeros((n, blocks * block), np.float32)
    x[:, :k] = w_nk
    x = x.reshape(n, blocks, block)
    qmax = (1 << bits) - 1
    lo0 = np.minimum(x.min(axis=-1, keepdims=True), 0)
    hi0 = np.maximum(x.max(axis=-1, keepdims=True), 0)
    best = (np.full(lo0.shape, np.inf, np.float32), np.ones(lo0.shape, np.float32), np.zeros(lo0.shape, np.float32), np.zeros(x.shape, np.float32))
    for f in _FACTORS:
        s = (hi0 - lo0) * np.float32(f) / qmax
        s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
        z = np.clip(np.rint(-lo0 * np.float32(f) / s), 0, qmax)
        q = np.clip(np.rint(x / s) + z, 0, qmax)
        err = np.square((q - z) * s - x).sum(axis=-1, keepdims=True)
        better = err < best[0]
        best = (np.where(better, err, best[0]), np.where(better, s, best[1]), np.where(better, z, best[2]), np.where(better, q, best[3]))
    _, s, z, q = best
    return q.astype(np.uint8), s[..., 0].astype(np.float32), z[..., 0].astype(np.uint8)


def _dequantized(codes: np.ndarray, scales: np.ndarray, zp: np.ndarray, k: int) -> np.ndarray:
    return ((codes.astype(np.float32) - zp[:, :, None]) * scales[:, :, None]).reshape(codes.shape[0], -1)[:, :k]


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    err = float(np.square(ref.astype(np.float64) - got).sum())
    sig = float(np.square(ref.astype(np.float64)).sum())
    return math.inf if err == 0 else 10 * math.log10(sig / err) if sig > 0 else -math.inf


class LowerPackedWeights(Pass[PackedWeightsOptions]):
    """Codebook weights to com.microsoft MatMulNBits / GatherBlockQuantized (see the module docstring)."""

    name = "lower-packed-weights"
    summary = "Codebook weights to onnxruntime's MatMulNBits / GatherBlockQuantized, kept packed in memory (cpu, cuda)."
    lossless = False
    Options = PackedWeightsOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        opts = self.options
        report = PackedWeightsReport()
        ctx.records[REPORT_KEY] = report
        graph = model.graph
        changed = 0
        for node in graph.topological_order():
            if node.graph is None or node.op_type != "Gather" or not node.is_standard_domain():
                continue
            out = node.output(0)
            if read_codebook(out) is not None:
                if opts.matmuls:
                    # the decoded weight: this Gather's output, or the Mul that scales it by channel
                    users = out.consumers() if out is not None else []
                    scaled = users[0].output(0) if len(users) == 1 and users[0].op_type == "Mul" else None
                    target = scaled if scaled is not None and decoded_weight(scaled) is not None else out
                    decoded = decoded_weight(target)
                    if decoded is not None and target is not None:
                        changed += self._lower_matmuls(graph, target, decoded[0], decoded[1], report, opts)
            elif opts.embeddings:
                changed += self._lower_embedding(graph, node, report, opts)
        if changed:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
            DeadCodeElimination()(model)
            graph.toposort()
        return PassResult(changed > 0, {"matmul_nbits": sum(w.op == "MatMulNBits" for w in report.weights), "gather_block_quantized": sum(w.op == "GatherBlockQuantized" for w in report.weights)})

    # -- MatMul / Gemm ------------------------------------------------------------------------
    def _lower_matmuls(
        self, graph: Graph, out: Value, w: np.ndarray, book_size: int, report: PackedWeightsReport, opts: PackedWeightsOptions
    ) -> int:
        if w.ndim != 2:
            return 0
        bits = opts.bits or (4 if book_size <= 16 else 8)
        done = 0
        packed: dict[tuple[bool, float], tuple[list[Value], int, int, float]] = {}
        for node, i in list(out.uses()):
            label = node.name or node.op_type
            if i != 1 or node.op_type not in ("MatMul", "Gemm") or node.graph is not graph:
                continue
            if node.op_type == "Gemm" and int(node.attr("transA", 0)):
                report.skipped[label] = "Gemm with transA"
                continue
            a_shape = node.input(0).shape() if node.input(0) is not None else None  # type: ignore[union-attr]
            if a_shape is not None and len(a_shape) < 2:
                report.skipped[label] = "A is 1-D (MatMulNBits needs rows)"
                continue
            trans = node.op_type == "Gemm" and bool(int(node.attr("transB", 0)))
            alpha = float(node.attr("alpha", 1.0)) if node.op_type == "Gemm" else 1.0
            bias: Value | None = None
            if node.op_type == "Gemm" and node.input(2) is not None:
                c = constant_value(node.input(2))
                n_out = w.shape[0] if trans else w.shape[1]
                if c is None or c.size not in (1, n_out) or (c.ndim == 2 and c.shape[0] != 1):
                    report.skipped[label] = "Gemm bias C is not a constant row"
                    continue
                row = np.broadcast_to(c.reshape(-1).astype(np.float32) * float(node.attr("beta", 1.0)), (n_out,))
                bias = add_constant(graph, np.ascontiguousarray(row), f"{out.name}_nbits_bias")
            key = (trans, alpha)
            if key not in packed:
                w_nk = (w if trans else w.T) * np.float32(alpha)
                codes, scales, zp = quantize_blocks(w_nk, bits, opts.block_size)
                n, k = w_nk.shape
                consts = [
                    add_constant(graph, pack_bits(codes, bits), f"{out.name}_nbits_B"),
                    add_constant(graph, scales, f"{out.name}_nbits_scales"),
                    add_constant(graph, pack_bits(zp, bits), f"{out.name}_nbits_zero_points"),
                ]
                sq = _sqnr(w_nk, _dequantized(codes, scales, zp, k))
                packed[key] = (consts, k, n, sq)
                report.weights.append(LoweredWeight(out.name, "MatMulNBits", bits, sq, sum(v.const_nbytes() for v in consts)))
            consts, k, n, _ = packed[key]
            inputs: list[Value | None] = [node.input(0), *consts]
            if bias is not None:
                inputs += [None, bias]
            y = node.output(0)
            assert y is not None
            attrs = {"K": k, "N": n, "bits": bits, "block_size": opts.block_size}
            node.set_outputs([])
            graph.remove(node, safe=False)
            _append(graph, "MatMulNBits", inputs, [y], f"{label}_nbits", attrs)
            done += 1
        return done

    # -- embeddings ---------------------------------------------------------------------------
    def _lower_embedding(self, graph: Graph, node: Node, report: PackedWeightsReport, opts: PackedWeightsOptions) -> int:
        """``Gather(codebook, Cast(Gather(indices, ids)))`` -> GatherBlockQuantized(ids). A ``Mul``
        by the codebook's per-column scales after it stays: quantizing the scaled rows into
        blocks would add error, the 16 or 256 shared values before scaling requantize better."""
        book = constant_value(node.input(0))
        cast = node.input(1).producer if node.input(1) is not None else None  # type: ignore[union-attr]
        rows = cast.input(0).producer if cast is not None and cast.op_type == "Cast" and cast.input(0) is not None else None  # type: ignore[union-attr]
        if book is None or book.ndim != 1 or rows is None or rows.op_type != "Gather" or int(rows.attr("axis", 0)) != 0:
            return 0
        table_v, ids = rows.input(0), rows.input(1)
        table = constant_value(table_v)
        if table is None or ids is None or table.ndim != 2 or table_v is None or table_v.const is None:
            return 0
        if table_v.const.data_type not in (onnx.TensorProto.UINT8, onnx.TensorProto.UINT4):
            return 0
        label = node.name or "embedding"
        h = table.shape[1]
        block = opts.block_size
        while block > 16 and h % block:
            block //= 2
        if h % block:
            report.skipped[label] = f"hidden size {h} is not a multiple of 16"
            return 0
        bits = opts.bits or (4 if book.size <= 16 else 8)
        w = book.astype(np.float32)[table.astype(np.int64)]
        codes, scales, zp = quantize_blocks(w, bits, block)
        data = pack_bits(codes.reshape(w.shape[0], -1), bits)
        consts = [
            add_constant(graph, data, f"{table_v.name}_gbq"),
            ids,
            add_constant(graph, scales, f"{table_v.name}_gbq_scales"),
            add_constant(graph, pack_bits(zp, bits), f"{table_v.name}_gbq_zero_points"),
        ]
        y = node.output(0)
        assert y is not None
        node.set_outputs([])
        graph.remove(node, safe=False)
        attrs = {"bits": bits, "block_size": block, "gather_axis": 0, "quantize_axis": 1}
        _append(graph, "GatherBlockQuantized", consts, [y], f"{label}_gbq", attrs)
        sq = _sqnr(w, _dequantized(codes, scales, zp, h))
        report.weights.append(LoweredWeight(table_v.name, "GatherBlockQuantized", bits, sq, sum(v.const_nbytes() for v in (consts[0], consts[2], consts[3]))))
        return 1


def _append(graph: Graph, op_type: str, inputs: list[Value | None], outputs: list[Value], name: str, attrs: dict) -> Node:
    """Append a com.microsoft node producing existing values (names and types kept)."""
    model = graph.model
    assert model is not None
    node = Node(op_type, inputs, outputs, domain=MS_DOMAIN, name=model.unique_node_name(name))
    for k, v in attrs.items():
        node.attributes[k] = helper.make_attribute(k, v)
    node.metadata_props.append(onnx.StringStringEntryProto(key=PROVENANCE_KEY, value=PROVENANCE))
    return graph.append(node)


__all__ = ["REPORT_KEY", "LowerPackedWeights", "PackedWeightsOptions", "PackedWeightsReport", "quantize_blocks"]
