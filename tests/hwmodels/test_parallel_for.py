"""onnxruntime's cost-gated ParallelFor for elementwise ops (`hwmodels.kernels.threads`):
closed-form checks of Eigen's gate and block size, onnxruntime's own profile as the oracle of
which loops split and into which blocks, and the cost kernel using it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgesim import assignment
from edgesim.loading import load_graph
from edgesim.simulation import simulate_graph
from hwmodels.kernels import threads as T
from hwmodels.target import load_target

ADD = T.parallel_for_cost(4.0, T.ELTWISE_COMPUTE_CYCLES)
SIGMOID = T.parallel_for_cost(4.0, T.EXP_COMPUTE_CYCLES)


def test_cost_per_element_is_eigens_byte_and_compute_cycles():
    # (4 bytes loaded + 4 stored) * 11 / 64 + compute
    assert ADD == pytest.approx(8 * 11 / 64 + 1) == pytest.approx(2.375)
    assert SIGMOID == pytest.approx(3.375)


def test_the_gate_opens_where_eigen_asks_for_two_threads():
    # int((n c - 1e5) / 1e5 + 0.9) >= 2  <=>  n c >= 2.1e5
    edge = 2.1e5 / ADD
    assert not T.parallel_for_splits(np.floor(edge), ADD)
    assert T.parallel_for_splits(np.floor(edge) + 1, ADD)
    assert not T.parallel_for_splits(1.0, 1e9)  # a single element never splits


def test_block_size_and_busiest_share_in_closed_form():
    # n = 90,000 Adds on 2 threads: max(ceil(n / 8), floor(40000 / 2.375)) = 16842, six
    # blocks that divide evenly over 2 threads; the busiest runs 3 of them
    assert T.parallel_for_block(90_000.0, ADD, 2.0) == 16842
    assert T.parallel_for_share(90_000.0, ADD, 2.0) == pytest.approx(3 * 16842 / 90_000)
    # 2^18 elements: ceil(n / 8) = 32768 wins, 8 blocks, 4 each
    assert T.parallel_for_block(2.0**18, ADD, 2.0) == 32768
    assert T.parallel_for_share(2.0**18, ADD, 2.0) == pytest.approx(0.5)
    # below the gate, or on one thread: the calling thread runs everything
    assert T.parallel_for_share(50_000.0, ADD, 2.0) == 1.0
    assert T.parallel_for_share(2.0**18, ADD, 1.0) == 1.0


def test_coarsening_takes_blocks_that_divide_evenly():
    # n = 100,000 on 3 threads: 16842-blocks give 6 blocks (even over 3 threads) at once
    assert T.parallel_for_block(100_000.0, ADD, 3.0) == 16842
    # n = 150,000 on 4 threads: 9 blocks of 16842 divide as 3/2/2/2 (efficiency 0.75);
    # 8 blocks of ceil(150000 / 8) = 18750 divide evenly and are taken
    assert T.parallel_for_block(150_000.0, ADD, 4.0) == 18750
    assert T.parallel_for_share(150_000.0, ADD, 4.0) == pytest.approx(2 * 18750 / 150_000)


def _profiled_block(op: str, n: int, tmp: Path) -> list[int]:
    """block_size list onnxruntime records for one `op` node over n fp32 elements at 2
    threads (empty: the loop stayed on the calling thread)."""
    ins = ["x", "x"] if op in ("Add", "Mul") else ["x"]
    graph = helper.make_graph(
        [helper.make_node(op, ins, ["y"], name="op")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / f"{op}{n}")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.ones(n, np.float32)})
    for e in json.loads(Path(sess.end_profiling()).read_text()):
        if e.get("cat") == "Node" and e["name"] == "op_kernel_time":
            stats = e["args"].get("thread_scheduling_stats", {})
            return list(stats.get("main_thread", {}).get("block_size", []))
    raise AssertionError("no kernel event for the node")


@pytest.mark.parametrize(("op", "cost"), [("Add", ADD), ("Relu", ADD), ("Sigmoid", SIGMOID)])
@pytest.mark.parametrize("n", [32_768, 65_536, 88_000, 90_000, 262_144])
def test_onnxruntime_splits_the_loops_the_gate_splits_into_the_same_blocks(op, cost, n,
                                                                          tmp_path):
    blocks = _profiled_block(op, n, tmp_path)
    assert bool(blocks) == T.parallel_for_splits(float(n), cost)
    if blocks:
        assert blocks[0] == T.parallel_for_block(float(n), cost, 2.0)


def _ms(op: str, n: int, t: int, target) -> float:
    ins = ["x", "x"] if op == "Add" else ["x"]
    graph = helper.make_graph(
        [helper.make_node(op, ins, ["y"], name="op")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])])
    g = load_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    sim = simulate_graph(g, target, assignment.resolve(g, "fp32"), threads=t)
    return float(sum(r.latency_ms for r in sim.layers))


def test_a_loop_below_the_gate_costs_the_same_on_two_threads():
    rpi5 = load_target("rpi5")  # onnxruntime runtime, 4 cores
    # Sigmoid (exp per element: compute-bound) over 50,000 elements: n c = 168,750 < 2.1e5,
    # onnxruntime stays on one thread, so the second thread changes nothing
    assert _ms("Sigmoid", 50_000, 2, rpi5) == pytest.approx(_ms("Sigmoid", 50_000, 1, rpi5),
                                                           rel=1e-9)
    # 100,000 elements split (8 blocks of 12,500: share 1/2) and stay in the caches: two
    # threads take less time than one
    assert T.parallel_for_share(100_000.0, SIGMOID, 2.0) < 0.6
    assert _ms("Sigmoid", 100_000, 2, rpi5) < 0.8 * _ms("Sigmoid", 100_000, 1, rpi5)
