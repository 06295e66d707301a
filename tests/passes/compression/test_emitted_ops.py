"""Every op the compression passes emit has a kernel and a cost formula in the op table
(docs/ARCHITECTURE.md: folding and the cost model must understand what the compiler writes)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from pass_helpers import const, make_model, vi

from onnxforge import modelio
from onnxforge.ir import PROVENANCE_KEY
from onnxforge.kernels.table import TABLE
from onnxforge.passes import DeduplicateInitializers, FactorizeLowRank, LowerPackedWeights, ShareWeights
from onnxforge.passmanager import PassContext


def test_compression_passes_emit_only_ops_with_kernel_and_cost():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((64, 32)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["e", "ids"], ["x"], axis=0),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("MatMul", ["h", "et"], ["y"]),
    ]
    model = make_model(
        nodes, [vi("ids", TensorProto.INT64, [4])], [vi("y", shape=[4, 64])],
        [const("e", e), const("w", rng.standard_normal((32, 32))), const("et", e.T.copy())],
    )
    ctx = PassContext()
    ir = modelio.load(model).model
    emitted: set[tuple[str, str]] = set()

    def collect() -> None:
        emitted.update((n.domain, n.op_type) for n in ir.graph.walk() if any(p.key == PROVENANCE_KEY for p in n.metadata_props))

    ir = ctx.run(FactorizeLowRank(min_elements=100, rank_ratio=0.5), ir).output(ir)
    collect()
    ctx.run(DeduplicateInitializers(transposed=True, min_transposed_bytes=0), ir)
    collect()
    ir = ctx.run(ShareWeights(bits=4, min_elements=100), ir).output(ir)
    collect()
    ctx.run(LowerPackedWeights(), ir)
    collect()
    assert {("", "MatMul"), ("", "Cast"), ("", "Gather"), ("com.microsoft", "MatMulNBits"),
            ("com.microsoft", "GatherBlockQuantized")} <= emitted  # fmt: skip
    for domain, op in emitted | {("", "Transpose")}:
        entry = TABLE.entry(op, domain)
        assert entry is not None and entry.kernel is not None and entry.cost is not None, (domain, op)
