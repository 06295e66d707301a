"""Cost formulas of the recurrent operators LSTM, GRU and RNN.

Per time step and direction the gates compute ``batch * gates * hidden * (input + hidden)``
MACs (the ``W x`` and ``R h`` products; ``gates`` is 4 for LSTM, 3 for GRU, 1 for RNN), so the
total is ``seq_length * directions`` times that. FLOPs add, per hidden unit and step, the bias
adds (``2 * gates`` when ``B`` is given) and the gate arithmetic: LSTM 18 (three sigmoids at 4,
two tanh, cell update ``f*c + i*g``, ``o * tanh(c)``; 6 more with peepholes), GRU 13, RNN 1.
"""

from __future__ import annotations

from onnxforge.kernels.costs.formula import MATMUL, CostCall, FormulaSet, MissingShape, OpCost

#: The cost formulas this module defines (collected by onnxforge.kernels.table).
FORMULAS = FormulaSet()

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_GATE_FLOPS = {"LSTM": 18, "GRU": 13, "RNN": 1}


@FORMULAS.register(["LSTM", "GRU", "RNN"], kind=MATMUL)
def _recurrent(call: CostCall) -> OpCost:
    x = call.require_input(0)
    r = call.require_input(2)
    if x.rank != 3 or r.rank != 3:
        raise MissingShape(f"{call.op_type}: X and R must have rank 3")
    layout = int(call.attr("layout", 0) or 0)
    seq, batch = (x.shape[1], x.shape[0]) if layout else (x.shape[0], x.shape[1])
    input_size = x.shape[2]
    directions = r.shape[0]
    hidden = int(call.attr("hidden_size", 0) or 0) or r.shape[2]
    gates = _GATES[call.op_type]
    steps = seq * directions
    macs = steps * batch * gates * hidden * (input_size + hidden)
    per_unit = _GATE_FLOPS[call.op_type]
    if call.input(3) is not None:
        per_unit += 2 * gates
    if call.op_type == "LSTM" and call.input(7) is not None:
        per_unit += 6
    return OpCost(macs, 2 * macs + steps * batch * hidden * per_unit)
