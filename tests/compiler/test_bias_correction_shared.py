"""Bias correction of layers that share one weight (an unrolled LSTM's steps read one
recurrent matrix, emitted once): one correction, the mean of the layers' output shifts,
written once. Oracle: the float and fake-quantised graphs' mean outputs (the executor), and
onnxruntime running the emitted file."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from compiler.bias_correction import bias_correct
from compiler.emit import emit
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.quantize import QuantOptions, quantize
from compiler.verify import verify
from tests.compiler.opcheck import graph_model

S, K, N = 16, 32, 8
F = TensorProto.FLOAT
RNG = np.random.default_rng(5)
SHARED, OWN = (RNG.standard_normal((K, N)).astype(np.float32) for _ in range(2))
MEANS = {"x1": 0.5, "x2": 2.0, "x3": 1.0}  # input means: the layers' shifts differ


def _graphs():
    nodes = [helper.make_node("MatMul", ["x1", "w"], ["y1"]),
             helper.make_node("MatMul", ["x2", "w"], ["y2"]),  # the same weight as y1
             helper.make_node("MatMul", ["x3", "w_own"], ["y3"])]
    model = graph_model(nodes, [(x, F, [S, K]) for x in MEANS],
                        [(y, F, None) for y in ("y1", "y2", "y3")], {"w": SHARED, "w_own": OWN})
    g = load(model)
    bits = np.array([[4, 32] if la.kind == "linear" else [32, 32] for la in g.layers])
    return g, quantize(g, bits, None, QuantOptions(int8_dot=False))


def _batches() -> list[dict[str, np.ndarray]]:
    return [{x: RNG.standard_normal((S, K)).astype(np.float32) + m for x, m in MEANS.items()}
            for _ in range(4)]


def _shift(g_q, g, batches, y: str) -> np.ndarray:
    """Mean over the batches of the quantised minus the float output, per output channel."""
    return np.mean([run(g_q, b, fake_quant=True)[y].astype(np.float64)
                    - run(g, b)[y].astype(np.float64) for b in batches], axis=(0, 1))


def test_layers_sharing_a_weight_get_one_bias_lowered_by_their_mean_shift() -> None:
    g, qg = _graphs()
    batches = _batches()
    before = {y: _shift(qg, g, batches, y) for y in ("y1", "y2", "y3")}
    assert np.abs(before["y1"] - before["y2"]).max() > 1e-3  # two different shifts to pool
    cg = bias_correct(qg, batches)
    verify(cg)
    bias = {la.outputs[0]: la.inputs[2] for la in cg.layers if la.kind == "linear"}
    shared = bias["y1"]
    assert bias["y2"] == shared != bias["y3"]  # one bias per weight
    np.testing.assert_allclose(cg.weights[shared], -(before["y1"] + before["y2"]) / 2,
                               rtol=1e-5, atol=1e-6)
    after = {y: _shift(cg, g, batches, y) for y in ("y1", "y2", "y3")}
    tol = 1e-5 * max(np.abs(s).max() for s in before.values()) + 1e-6
    np.testing.assert_allclose((after["y1"] + after["y2"]) / 2, 0.0, atol=tol)
    np.testing.assert_allclose(after["y3"], 0.0, atol=tol)


def test_the_shared_bias_is_written_once_and_runs_as_simulated() -> None:
    _, qg = _graphs()
    batches = _batches()
    cg = bias_correct(qg, batches)
    model = emit(cg)
    vectors = [i for i in model.graph.initializer if list(i.dims) == [N] and i.data_type == 1]
    assert len(vectors) == 2  # one fp32 bias for w, one for w_own (was one per layer: 3)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for b in batches:
        got = dict(zip(("y1", "y2", "y3"), sess.run(["y1", "y2", "y3"], b)))
        want = run(cg, b, fake_quant=True)
        for y, value in got.items():
            np.testing.assert_allclose(value, want[y], rtol=1e-4, atol=1e-4, err_msg=y)
