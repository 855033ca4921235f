"""MLAS's NCHWc convs take every thread, whatever their size (snchwc.cpp MlasNchwcConv:
`WorkBlock.tids = MlasGetMaximumThreadCount(ThreadPool)`), while its GEMMs give each thread
>= MLAS_SGEMM_THREAD_COMPLEXITY = 64K MACs. Oracle: onnxruntime's own profile on this x86
host, whose thread statistics say whether a node ran a parallel section
(`profile_runs.parallel_nodes`), not a timing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import profile_runs
from edgesim.api import simulate
from hwmodels import ort_layout
from hwmodels.probe import host_arch
from hwmodels.target import load_target

# 3x3 conv, 8 -> 8 channels on 8 x 8: 8 * 8 * 8 * 72 = 36864 MACs, under 64K;
# the Gemm: 1 x 64 x 64 = 4096 MACs
CONV_MACS = 8 * 8 * 8 * 8 * 9


def _model(path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (8, 8, 3, 3)), ("fc", (512, 64)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Flatten", ["c"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _avx2_target():
    """Two AVX2 cores (NCHWc blocks of 8 floats), no per-node or per-thread overhead: a split
    shows."""
    return dataclasses.replace(load_target("rpi5"), name="avx2", arch="x86_64",
                               isa=("sse4_2", "avx", "avx2", "fma"), simd_bits=256, cores=2,
                               thread_overhead_us=0.0, op_overhead_us=0.0, gemm_overhead_us=0.0)


@pytest.mark.ort
def test_onnxruntime_splits_a_small_nchwc_conv_and_not_a_small_gemm(tmp_path):
    """The oracle itself, on this host (x86 with AVX2, where onnxruntime runs NCHWc)."""
    assert host_arch() == "x86_64"
    _model(tmp_path / "m.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "p")
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), opts,
                                providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {"x": np.ones((1, 8, 8, 8), np.float32)})
    events = json.loads(Path(sess.end_profiling()).read_text())
    split = profile_runs.parallel_nodes(events)
    ops = {n.name: n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    conv = next(n for n, op in ops.items() if op == "Conv" and n.endswith("_nchwc"))
    gemm = next(n for n, op in ops.items() if op == "Gemm")
    assert CONV_MACS < 65536
    assert split[conv] and not split[gemm]


def test_model_splits_a_small_nchwc_conv_over_every_thread(tmp_path):
    """Old code applied the 64K-MAC threshold to it: one thread, the same time at 1 and 2."""
    _model(tmp_path / "m.onnx")
    tgt = _avx2_target()
    assert ort_layout.nchwc_block(tgt) == 8
    one, two = (simulate(str(tmp_path / "m.onnx"), tgt, bits="fp32", threads=t)
                for t in (1, 2))
    at = {t: {r.name: r.latency_ms for r in s.layers} for t, s in ((1, one), (2, two))}
    assert at[2]["conv"] < at[1]["conv"] * (1 - 1e-6)  # split (old code: equal)
    # a Gemm this small stays on one thread (MLAS_SGEMM_THREAD_COMPLEXITY), as onnxruntime's
    assert at[2]["fc"] == pytest.approx(at[1]["fc"])
    # off x86 (Arm: im2col + MlasGemm) the threshold holds for the conv too
    arm = dataclasses.replace(tgt, arch="arm64", isa=("neon",))
    arm_at = [next(r.latency_ms for r in simulate(str(tmp_path / "m.onnx"), arm, bits="fp32",
                                                  threads=t).layers if r.name == "conv")
              for t in (1, 2)]
    assert arm_at[1] == pytest.approx(arm_at[0])
