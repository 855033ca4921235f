"""A size budget counts embedding tables as emission writes them (issue 16, item 1).

The oracle for sizes is the emitted ONNX file itself (the bytes of its initializers); the
oracle for the coupled knapsack (the table's width depends on the plan) is brute force.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.allocate import InfeasibleBudget
from compiler.frontend import load
from edgesim import api
from edgesim.allocation import allocate
from edgesim.budget import Budget
from edgesim.compile_plan import emitted_bits
from edgesim.errors import UserError
from edgesim.quantize import quantize_model
from edgesim.tables import (
    TableCost,
    emitted_embedding_bits,
    smallest_coupled,
    solve_coupled,
)

VOCAB, DIM, SEQ = 1024, 64, 8  # 65536 elements: the smallest table emission quantises


def _embedding_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(VOCAB, DIM)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.normal(size=(DIM, DIM)).astype(np.float32) / 8, "w1"),
             numpy_helper.from_array(rng.normal(size=(DIM, 16)).astype(np.float32) / 8, "w2")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
             helper.make_node("MatMul", ["e", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, SEQ])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _initializer_bytes(path: Path, prefix: str = "") -> int:
    """Bytes of the tensors the file holds (INT4: two per byte), not of its protobuf framing;
    only those whose name starts with `prefix`."""
    total = 0
    for t in onnx.load(str(path)).graph.initializer:
        if not t.name.startswith(prefix):
            continue
        n = int(np.prod(t.dims))
        total += (n + 1) // 2 if t.data_type in (TensorProto.INT4, TensorProto.UINT4) else \
            numpy_helper.to_array(t).nbytes
    return total


@pytest.fixture(scope="module")
def graph():
    return load(_embedding_model())


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, ids=np.random.default_rng(1).integers(0, VOCAB, size=(8, SEQ)))
    return str(path)


@pytest.mark.parametrize("w_bits", [8, 6, 4])
def test_predicted_size_is_the_emitted_initializer_bytes(tmp_path, graph, calib, w_bits) -> None:
    target = api.resolve_target("rpi5")
    r = allocate(graph, target, method="proxy", budget=Budget("bits", w_bits),
                 weight_bits=(w_bits,))
    out = tmp_path / "m.onnx"
    quantize_model(graph, emitted_bits(graph, r.bits), calib=calib, out=out,
                   kernel_check="off")
    # the table: codes (UINT8, or INT4 two per byte) and one fp32 scale per 32 values,
    # exactly as written (counted at fp32 it would be 262 kB)
    gather = [i for i, layer in enumerate(graph.layers) if layer.kind == "gather"][0]
    width = 8 if w_bits > 4 else 4
    assert r.cost.weight_bytes[gather, 0] == _initializer_bytes(out, "Gather_0.table")
    assert r.cost.weight_bytes[gather, 0] == VOCAB * DIM * width // 8 + VOCAB * 2 * 4
    # the whole model: the MAC layers' bytes are the cost model's (hwmodels
    # weight_store_bytes), which leaves out W8A8's per-channel scales and zero points and
    # 8-bit-container MatMulNBits scales, and counts 4-bit zero points the emitter omits; the
    # table is 80 % of this model, so the total is within 3 % (47 % off at fp32)
    assert float(r.cost.weight_bytes.sum()) == pytest.approx(_initializer_bytes(out), rel=0.03)


def test_a_budget_that_fits_only_with_the_emitted_table_is_met(tmp_path, graph, calib) -> None:
    target = api.resolve_target("rpi5")
    fp32_table = VOCAB * DIM * 4
    # W8 everywhere: the table at 8 bits; the old count (fp32 table) alone exceeds the budget
    budget = Budget("size", 0.5 * fp32_table)
    r = allocate(graph, target, method="proxy", budget=budget)
    out = tmp_path / "m.onnx"
    quantize_model(graph, emitted_bits(graph, r.bits), calib=calib, out=out,
                   kernel_check="off")
    assert r.total <= budget.value
    assert _initializer_bytes(out) <= budget.value * 1.005


def test_a_budget_below_every_plan_names_the_emitted_smallest(graph) -> None:
    target = api.resolve_target("rpi5")
    with pytest.raises(UserError, match="smallest feasible budget is size=") as e:
        allocate(graph, target, method="proxy", budget=Budget("size", 1000))
    smallest = float(str(e.value).rsplit("size=", 1)[1].removesuffix("MB")) * 1e6
    # 2-bit MatMulNBits everywhere and the table at 4 bits: under a sixth of the fp32 table,
    # and the graph around the weights (nodes, names, metadata: ~1.2 kB), which the file holds
    assert smallest < VOCAB * DIM * 4 / 6 + 2000
    r = allocate(graph, target, method="proxy", budget=Budget("size", smallest * 1.002))
    assert r.total <= smallest * 1.002
    assert min(r.bits[[1, 3], 0]) <= 4  # the 4-bit table needs a layer at 4 bits or fewer


def _brute(omega, cost, w_bits, limit, tables):
    best = None
    for combo in itertools.product(range(omega.shape[1]), repeat=omega.shape[0]):
        c = np.array(combo)
        total = cost[np.arange(len(c)), c].sum() + tables.delta(emitted_embedding_bits(w_bits[c]))
        s = omega[np.arange(len(c)), c].sum()
        if total <= limit and (best is None or s < best[0] - 1e-12):
            best = (s, total)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_coupled_knapsack_equals_brute_force(seed) -> None:
    rng = np.random.default_rng(seed)
    w_bits = np.array([32, 8, 6, 4, 2])
    layers = 4
    cost = np.sort(rng.uniform(1, 10, (layers, 5)), axis=1)[:, ::-1] * (w_bits / 32)[None]
    omega = np.sort(rng.uniform(0, 1, (layers, 5)), axis=1)
    omega[:, 0] = 0.0
    tables = TableCost((0,), {None: (40.0,), 8: (10.0,), 4: (5.5,)}, (40.0,))
    allowed = np.ones_like(cost, dtype=bool)
    low = smallest_coupled(cost, allowed, w_bits, tables)
    for limit in np.linspace(low, cost[:, 0].sum() + 1, 9):
        want = _brute(omega, cost, w_bits, limit, tables)
        got, width = solve_coupled(omega, cost, allowed, w_bits, limit, tables)
        total = got.total_cost + tables.delta(width)
        assert width == emitted_embedding_bits(w_bits[got.choice])
        assert total <= limit + 1e-9
        assert got.total_sens == pytest.approx(want[0], abs=1e-12)
    with pytest.raises(InfeasibleBudget):
        solve_coupled(omega, cost, allowed, w_bits, low - 1e-6 * abs(low), tables)
