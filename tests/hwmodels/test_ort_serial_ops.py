"""Which onnxruntime kernels use the thread pool: DequantizeLinear runs on the calling thread
at any size (quantize_linear.cc `DequantizeLinearApply`), so the cost kernel books a DQ
node's pass on one thread; a layout Transpose splits at any size. Oracle: onnxruntime's own
profile of a 2-thread session, whose thread statistics list the parallel sections a node ran
(none for DequantizeLinear; the cost-gated QuantizeLinear of the same tensor shows one, so
the check can fail)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgesim import profile_runs as PR
from hwmodels import cpu
from hwmodels.kernels import cpu as kernel
from hwmodels.kernels import cpu_layout as K
from hwmodels.target import load_target

N = 1 << 20  # 1 Mi elements: far past every thread gate


def _blocks(op: str, tmp: Path) -> list[int]:
    """block_size list of the node's parallel sections at 2 threads (empty: none)."""
    src, dst = (TensorProto.UINT8, TensorProto.FLOAT) if op == "DequantizeLinear" else (
        TensorProto.FLOAT, TensorProto.UINT8)
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "s", "z"], ["y"], name="op")], "g",
        [helper.make_tensor_value_info("x", src, [1, N])],
        [helper.make_tensor_value_info("y", dst, [1, N])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]),
         helper.make_tensor("z", TensorProto.UINT8, [], [128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / op)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    x = np.ones((1, N), np.uint8 if src == TensorProto.UINT8 else np.float32)
    sess.run(None, {"x": x})
    for e in json.loads(Path(sess.end_profiling()).read_text()):
        if e.get("cat") == "Node" and e["name"] == "op_kernel_time":
            stats = e["args"].get("thread_scheduling_stats", {})
            return list(stats.get("main_thread", {}).get("block_size", []))
    raise AssertionError("no kernel event for the node")


@pytest.mark.ort
def test_onnxruntime_dequantizes_on_one_thread_and_quantizes_on_two(tmp_path):
    assert _blocks("DequantizeLinear", tmp_path) == []
    assert _blocks("QuantizeLinear", tmp_path) != []


M = 1 << 16  # DQ outputs in the model's check: 320 KB of traffic, five 64 KiB thread chunks


def _dq_pass_cycles(threads: int, runtime: int) -> float:
    """Cycles `gemm_streams` books for a DQ node's pass alone (a row with only A_DQ_OUT) over
    M outputs, on a Pi 5 whose lanes are narrowed to a quarter so the pass is compute-bound."""
    p = cpu.params_row(load_target("rpi5"), threads)
    p[K.P_LANES32] = 0.25
    ch = cpu.cache_rows(load_target("rpi5"))
    li = np.zeros(K.NL, np.int64)
    li[K.L_KIND], li[K.L_M], li[K.L_N], li[K.L_K], li[K.L_G] = K.KIND_CONV, 1, M, 1, 1
    li[K.L_AOUT], li[K.L_KH], li[K.L_WEL] = M, 1, M  # weights: no run-time B pack
    li[K.L_DQ_COPIES] = 1  # one float reader: one DQ node
    row = np.zeros(K.NA)
    row[K.A_DQ_OUT] = 1.0
    traffic, acc = np.zeros(K.MAX_LEVELS + 1), np.zeros(K.NACC)
    kernel.gemm_streams(li, row, 8, 1.0, 1.0, 1.0, True, False, False, runtime, p, ch,
                        traffic, acc)
    return float(acc[K.ACC_T_COMPUTE:K.ACC_T_OVERHEAD].sum())


def test_a_dq_pass_costs_its_one_thread_time_on_two_threads():
    one = _dq_pass_cycles(1, K.RUNTIME_ORT)
    # 2 lane ops per element on a quarter lane x 2 pipes: 4 cycles per element, above the
    # 5 bytes per element the Pi 5's L3 serves
    pipes = load_target("rpi5").fma_pipes
    assert one == pytest.approx(M * 2.0 / (0.25 * pipes))
    assert _dq_pass_cycles(2, K.RUNTIME_ORT) == pytest.approx(one)
    # ncnn dequantises inside its own omp loops: the pass still splits there, the second
    # thread adding `parallel_efficiency` of a core
    eff = load_target("rpi5").parallel_efficiency
    assert _dq_pass_cycles(2, K.RUNTIME_NCNN) == pytest.approx(one / (1 + eff))


@pytest.mark.ort
@pytest.mark.parametrize(("dtype", "shape", "perm"), [
    (TensorProto.UINT8, [1, 2, 2, 64], [0, 3, 1, 2]),     # NHWC -> NCHW, 4 rows
    (TensorProto.FLOAT, [1, 56, 56, 64], [0, 3, 1, 2]),
    (TensorProto.UINT8, [1, 64, 2, 1], [0, 2, 3, 1])])    # NCHW -> NHWC, 2 pixels
def test_onnxruntime_splits_every_single_axis_transpose(dtype, shape, perm, tmp_path):
    """The premise of `kernels.cpu_inserted`'s threaded transposes: onnxruntime 1.32 runs a
    parallel section for a layout Transpose even of a few rows."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=perm, name="op")], "g",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", dtype, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "tr")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    sess.run(None, {"x": np.zeros(shape, np.uint8 if dtype == TensorProto.UINT8 else
                                  np.float32)})
    events = json.loads(Path(sess.end_profiling()).read_text())
    assert PR.parallel_nodes(events) == {"op": True}
