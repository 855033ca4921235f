"""Activation handling as an allocator choice (issue 16, item 2).

Each MAC layer chooses (weight bits, activation handling): float activations (weight-only:
MatMulNBits accuracy_level 0), static int8 (QDQ, MatMulIntegerToFloat) at 8-bit weights, int8
blocks inside MatMulNBits (accuracy_level 4) at 4-bit weights. The activation term is the
layer's own measured output error (`compiler.sensitivity.act_term`). Oracles: brute force over
every assignment with costs from `simulate_graph`; onnxruntime's outputs of the emitted model.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.emit import emit
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.quantize import quantize
from compiler.sensitivity.act_term import with_act_term
from compiler.sensitivity.proxy import sensitivity as proxy_sensitivity
from edgesim import api
from edgesim import calibration as cal
from edgesim.alloc_problem import candidate_bits
from edgesim.allocation import allocate, choice_errors
from edgesim.budget import Budget
from edgesim.float_pass import float_pass
from edgesim.simulation import simulate_graph

pytestmark = pytest.mark.ort
D, BATCH = 64, 4
W_BITS, A_BITS = (8, 4), (8, 32)


def _mlp() -> tuple:
    """x -> MatMul -> Relu -> MatMul -> Relu -> MatMul; input channel 0 is an outlier (x50),
    so static per-tensor int8 on the first layer's input loses the other channels."""
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(D, D)).astype(np.float32) / 8 for _ in range(2)]
    ws.append(rng.normal(size=(D, 8)).astype(np.float32) / 8)
    inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(ws)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]),
             helper.make_node("Relu", ["h0"], ["r0"]),
             helper.make_node("MatMul", ["r0", "w1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(32, D)).astype(np.float32)
    x[:, 0] *= 50.0
    return load(model), x


@pytest.fixture(scope="module")
def setup():
    g, x = _mlp()
    data = cal.CalibrationData({"x": x}, 32, "test")
    stats = float_pass(g, data, stats=True).stats
    target = api.resolve_target("rpi5")
    sens = proxy_sensitivity(g, bits=W_BITS)
    err = choice_errors(g, target, sens, stats, cal.batches(g, data), weight_bits=W_BITS,
                        act_bits=A_BITS)
    return g, x, data, stats, target, sens, err


def test_the_outlier_layer_measures_its_activation_error(setup) -> None:
    g, _, _, _, target, _, err = setup
    choices = candidate_bits(target, W_BITS, A_BITS).tolist()
    w8a8, w8 = choices.index([8, 8]), choices.index([8, 32])
    # first layer: the outlier channel sets the per-tensor scale, the int8 input error dwarfs
    # 8-bit weight rounding; the later layers' inputs have no outlier
    assert err[0, w8a8] > 10 * err[0, w8]
    assert err[0, w8a8] / err[0, w8] > 3 * err[1, w8a8] / err[1, w8]


def test_act_term_on_a_hand_table() -> None:
    choices = np.array([[32, 32], [8, 32], [8, 8], [4, 32], [4, 8]])
    omega_w = np.array([[0.0, 1.0, 1.0, 4.0, 4.0], [0.0, 2.0, 2.0, 6.0, 6.0]])
    err = np.array([[0.0, 0.5, 1.5, 2.0, 2.5], [0.0, 0.0, 1.0, 0.0, 0.25]])
    got = with_act_term(omega_w, err, choices)
    # layer 0: rate = 4 / 2 at its largest weight-only error (the w4 column)
    # layer 1: its weight-only errors are 0, so it takes the median rate over layers (2.0)
    want = np.array([[0.0, 1.0, 1.0 + 2.0 * 1.0, 4.0, 4.0 + 2.0 * 0.5],
                     [0.0, 2.0, 2.0 + 2.0 * 1.0, 6.0, 6.0 + 2.0 * 0.25]])
    np.testing.assert_allclose(got, want)


def test_allocator_optimum_equals_brute_force(setup) -> None:
    g, _, _, _, target, sens, err = setup
    choices = candidate_bits(target, W_BITS, A_BITS)
    omega = with_act_term(np.stack([[0.0 if w == 32 else sens.omega[i, list(W_BITS).index(w)]
                                     for w, _ in choices] for i in range(3)]), err, choices)
    macs = [i for i, layer in enumerate(g.layers) if layer.name in sens.layers]
    base = np.full((len(g.layers), 2), 32, dtype=np.int64)
    table = []
    for combo in itertools.product(range(len(choices)), repeat=len(macs)):
        bits = base.copy()
        bits[macs] = choices[list(combo)]
        sim = simulate_graph(g, target, bits)
        table.append((sim.total.latency_ms / 1e3, float(omega[np.arange(3), combo].sum()),
                      combo))
    lat = np.array([t[0] for t in table])
    for budget in np.quantile(lat, [0.05, 0.3, 0.6]):
        r = allocate(g, target, sens=sens, budget=Budget("latency", float(budget)),
                     weight_bits=W_BITS, act_bits=A_BITS, act_errors=err)
        best = min(s for c, s, _ in table if c <= budget * (1 + 1e-12))
        assert r.sensitivity == pytest.approx(best, rel=1e-9, abs=1e-15)
        assert r.total <= budget * (1 + 1e-9)


def test_a_mixed_activation_plan_runs_in_onnxruntime_as_simulated(setup) -> None:
    g, x, _, stats, _, _, _ = setup
    # layer 0 weight-only 4-bit (float activations), layer 1 static W8A8, layer 2 4-bit with
    # int8 activation blocks (MatMulNBits accuracy_level 4)
    bits = np.full((len(g.layers), 2), 32, dtype=np.int64)
    macs = [i for i, layer in enumerate(g.layers) if layer.kind == "linear"]
    bits[macs] = [[4, 32], [8, 8], [4, 8]]
    qg = quantize(g, bits, stats)
    fmts = [qg.layers[i].quant.fmt for i in macs]
    assert fmts == ["matmulnbits", "qdq", "matmulnbits"]
    assert [qg.layers[i].quant.a_bits for i in macs] == [None, 8, 8]
    model = emit(qg)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for start in range(0, 16, BATCH):
        feeds = {"x": x[start:start + BATCH]}
        (got,) = sess.run(None, feeds)
        want = run(qg, feeds, fake_quant=True)["y"]
        scale = float(np.abs(want).max())
        # float summation order differs between MLAS kernels and numpy: a code may flip
        np.testing.assert_allclose(got, want, atol=2e-3 * scale, rtol=0)
