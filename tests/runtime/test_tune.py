"""tune: the grid, the cost-model pruning, the written session file and the full-grid check."""

from __future__ import annotations

import json

import onnx
from lowering_models import branches, matmuls

from onnxforge import modelio
from onnxforge.cli import main
from onnxforge.cost.execution import cost_report, parallel_share, thread_speedup, tune_hints
from onnxforge.runtime.target import SessionConfig
from onnxforge.runtime.tune import Hints, grid, prune, thread_counts


def test_grid_and_thread_counts():
    assert thread_counts(1) == [1] and thread_counts(2) == [1, 2] and thread_counts(6) == [1, 2, 4, 6] and thread_counts(8) == [1, 2, 4, 8]
    g = grid(4)
    assert len(g) == 3 * 2 * 4 and len(set(g)) == len(g)


def test_prune_drops_parallel_mode_small_thread_gains_and_low_levels():
    kept, dropped = prune(grid(8), Hints(parallel_share=0.02, speedup={1: 1.0, 2: 1.9, 4: 2.0, 8: 2.05}))
    assert {c.execution_mode for c in kept} == {"sequential"}
    assert {c.threads for c in kept} == {1, 2}  # 4 threads: 2.0x vs 1.9x at 2 -> dropped, and 8 after it
    assert {c.optimization for c in kept} == {"extended", "all"}
    assert len(kept) + len(dropped) == len(grid(8))
    reasons = {r.split(":")[0] for _, r in dropped}
    assert reasons == {"parallel mode", "4 threads", "8 threads", "level disable", "level basic"}
    kept, _ = prune(grid(2), Hints(parallel_share=0.5, speedup={1: 1.0, 2: 2.0}))
    assert {c.execution_mode for c in kept} == {"sequential", "parallel"}


def test_cost_model_figures_for_pruning():
    chain = modelio.load(matmuls(4, 64)).model
    assert parallel_share(chain, cost_report(chain)) == 0.0
    wide = modelio.load(branches(4, 64)).model
    share = parallel_share(wide, cost_report(wide))
    assert 0.7 < share < 0.8  # four equal branches: three of them off the critical path
    big = cost_report(modelio.load(matmuls(2, 512)).model)  # 512x512 MatMuls on one row: 0.5 MFLOP each
    assert thread_speedup(big, 1) == 1.0 and 1.0 < thread_speedup(big, 2) <= 2.0
    tiny = cost_report(modelio.load(matmuls(2, 16)).model)
    assert thread_speedup(tiny, 8) == 1.0  # nothing big enough to split
    hints = tune_hints(wide, cost_report(wide), 2)
    assert set(hints.speedup) == {1, 2}


def test_tune_writes_the_best_options_next_to_the_model(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(2, 64), src)
    args = ["tune", str(src), "--cores", "2", "--rounds", "3", "--seconds-each", "0.05", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    written = tmp_path / "m.session.json"
    assert doc["written"] == str(written)
    saved = json.loads(written.read_text())
    assert saved["schema"] == "onnxforge.session/1" and saved["target"] == "cpu" and saved["model"] == "m.onnx"
    assert SessionConfig.from_json(saved["session"]) == SessionConfig.from_json(doc["best"]["session"])
    assert len(doc["grid"]) == len(grid(2)) and len(doc["searched"]) + len(doc["pruned"]) == len(grid(2))
    assert doc["agrees"] in (True, False) and doc["grid_best"] is not None
    # bench reads the file back
    assert main(["bench", str(src), "--session", str(written), "--runs", "3", "--seconds", "0", "--json"]) == 0
    bench_doc = json.loads(capsys.readouterr().out)
    assert bench_doc["target"]["session"] == saved["session"]


def test_tune_never_writes_over_the_model(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(matmuls(1, 16), src)
    assert main(["tune", str(src), "-o", str(src), "--no-grid"]) == 2
    assert "input" in capsys.readouterr().err
    assert onnx.load(src).graph.name == "matmuls1"
