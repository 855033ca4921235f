"""Constant regions built with ops edgesim does not lower (SwiftF0's DFT matrices from Sin, Cos
and ScatterElements) are folded at load; oracle: onnxruntime on the original model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import fold_constants
from compiler.frontend.load import load
from edgesim import api
from tests.compiler.opcheck import run_ort

F = TensorProto.FLOAT
N = 16  # DFT length


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def const_sin() -> onnx.ModelProto:
    """x [1, N] @ [cos | sin] DFT matrix [N, 2N], the matrix built from constants only:
    Range -> Mul (angle k*n) -> Cos/Sin, and a ScatterElements putting the DC row's sine
    to 1 (as SwiftF0 patches its matrices)."""
    nodes = [
        helper.make_node("Range", ["zero", "n_len", "one"], ["n"]),
        helper.make_node("Unsqueeze", ["n", "ax1"], ["n_col"]),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n_row"]),
        helper.make_node("Mul", ["n_col", "n_row"], ["kn"]),
        helper.make_node("Mul", ["kn", "step"], ["angle"]),
        helper.make_node("Cos", ["angle"], ["re"], name="cos"),
        helper.make_node("Sin", ["angle"], ["im0"], name="sin"),
        helper.make_node("ScatterElements", ["im0", "idx", "upd"], ["im"], axis=1, name="scat"),
        helper.make_node("Concat", ["re", "im"], ["w"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="dft"),
    ]
    inits = [_init("zero", np.float32(0)), _init("n_len", np.float32(N)),
             _init("one", np.float32(1)), _init("ax0", np.array([0], np.int64)),
             _init("ax1", np.array([1], np.int64)),
             _init("step", np.float32(2 * np.pi / N)),
             _init("idx", np.zeros((1, 1), np.int64)), _init("upd", np.ones((1, 1), np.float32))]
    graph = helper.make_graph(nodes, "const_sin", [helper.make_tensor_value_info("x", F, [1, N])],
                              [helper.make_tensor_value_info("y", F, [1, 2 * N])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_constant_dft_matrix_is_folded_and_runs_as_onnxruntime_runs_the_original():
    m = const_sin()
    x = np.random.default_rng(0).standard_normal((1, N)).astype(np.float32)
    g = load(m)
    np.testing.assert_allclose(run(g, {"x": x})["y"], run_ort(m, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
    # the folded matrix is the closed-form DFT (first sine entry patched to 1)
    angle = 2 * np.pi * np.outer(np.arange(N), np.arange(N)) / N
    im = np.sin(angle)
    im[0, 0] = 1.0
    np.testing.assert_allclose(run(g, {"x": x})["y"], x @ np.hstack([np.cos(angle), im]),
                               rtol=1e-4, atol=1e-4)


def test_the_folded_model_simulates_one_matmul_layer():
    sim = api.simulate(const_sin(), "rpi5", bits=8)
    assert [layer.name for layer in sim.layers] == ["dft"]
    assert sim.total.latency_ms > 0
    assert sim.total.weight_bytes >= N * 2 * N  # the folded matrix, one byte a weight at W8


def test_a_region_above_the_size_bound_stays_unsupported(monkeypatch):
    """Nothing is materialised past MAX_FOLD_BYTES (the DFT matrix here: 2 * N*N floats)."""
    monkeypatch.setattr(fold_constants, "MAX_FOLD_BYTES", 8 * N * N)
    with pytest.raises(ModelError, match=r"unsupported ops: Cos \(node cos\), ScatterElements "
                                         r"\(node scat\), Sin \(node sin\)"):
        load(const_sin())
