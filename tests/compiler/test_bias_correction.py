"""Empirical bias correction: on a linear layer whose inputs have a non-zero mean, 4-bit
weights shift the mean output by (W_q - W) E[x] (closed form, with W_q read off the
quantised layer's response to unit inputs); after correction the quantised layer's mean
output over the calibration data equals the float one, also with MatMulNBits' int8
activations (a non-linear layer, where only the empirical shift is exact); the emitted model
carries the corrected bias and matches the fake-quant simulation in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from compiler.bias_correction import bias_correct, eligible
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.quantize import QuantOptions, quantize
from compiler.verify import verify
from tests.compiler.opcheck import graph_model

S, K, N = 16, 64, 8
F = TensorProto.FLOAT
RNG = np.random.default_rng(11)
W = RNG.standard_normal((K, N)).astype(np.float32)  # MatMul's B [in, out]


def _model(bias: bool):
    """x @ W (MatMul), or Gemm(x, W, b): both lower to one linear layer."""
    inits = {"w": W, "b": RNG.standard_normal(N).astype(np.float32)} if bias else {"w": W}
    node = (helper.make_node("Gemm", ["x", "w", "b"], ["y"]) if bias
            else helper.make_node("MatMul", ["x", "w"], ["y"]))
    return graph_model([node], [("x", F, [S, K])], [("y", F, None)], inits)


def _bits(g, w_bits: int, a_bits: int = 32) -> np.ndarray:
    return np.array([[w_bits, a_bits] if la.kind == "linear" else [32, 32] for la in g.layers])


def _batches(n: int = 4) -> list[dict[str, np.ndarray]]:
    mean = np.linspace(0.5, 2.0, K, dtype=np.float32)  # a non-zero input mean per channel
    return [{"x": RNG.standard_normal((S, K)).astype(np.float32) + mean} for _ in range(n)]


def _mean_output(g, batches, fake: bool) -> np.ndarray:
    return np.mean([run(g, b, fake_quant=fake)["y"].astype(np.float64) for b in batches],
                   axis=(0, 1))


def _quantised(bias: bool, int8_dot: bool):
    g = load(_model(bias))
    bits = _bits(g, 4, 8 if int8_dot else 32)  # (4, 8): MatMulNBits with int8 activations
    return g, quantize(g, bits, None, QuantOptions(int8_dot=int8_dot))


@pytest.mark.parametrize("bias", [False, True])
def test_the_known_mean_shift_is_removed(bias: bool) -> None:
    g, qg = _quantised(bias, int8_dot=False)
    batches = _batches()
    x_mean = np.mean([b["x"] for b in batches], axis=(0, 1), dtype=np.float64)
    # W_q^T from the quantised layer's response to unit inputs, minus its (zero) response
    eye = [{"x": np.eye(K, dtype=np.float32)[i * S:(i + 1) * S]} for i in range(K // S)]
    zero = run(qg, {"x": np.zeros((S, K), np.float32)}, fake_quant=True)["y"][0]
    wq = np.concatenate([run(qg, e, fake_quant=True)["y"] - zero for e in eye])
    shift = x_mean @ (wq.astype(np.float64) - W)
    before = _mean_output(qg, batches, True) - _mean_output(g, batches, False)
    np.testing.assert_allclose(before, shift, rtol=1e-4, atol=1e-5)
    assert np.abs(shift).max() > 1e-3  # the shift is there to remove
    cg = bias_correct(qg, batches)
    verify(cg)
    after = _mean_output(cg, batches, True) - _mean_output(g, batches, False)
    np.testing.assert_allclose(after, 0.0, atol=2e-5 * np.abs(shift).max() + 1e-6)


def test_exact_on_the_int8_activation_path_too() -> None:
    g, qg = _quantised(True, int8_dot=True)
    (layer,) = [la for la in qg.layers if la.kind == "linear"]
    assert eligible(layer, 4) and qg.layer(layer.name).quant.a_bits == 8
    batches = _batches()
    cg = bias_correct(qg, batches)
    verify(cg)
    after = _mean_output(cg, batches, True) - _mean_output(g, batches, False)
    before = _mean_output(qg, batches, True) - _mean_output(g, batches, False)
    assert np.abs(after).max() < 1e-3 * np.abs(before).max() + 1e-6


def test_w8a8_and_wide_layers_are_left_alone() -> None:
    g = load(_model(True))
    stats_free = quantize(g, _bits(g, 6), None, QuantOptions(int8_dot=False))
    assert bias_correct(stats_free, _batches(1), max_bits=4) is stats_free


def test_the_emitted_model_carries_the_corrected_bias() -> None:
    import onnxruntime as ort

    from compiler.emit import emit

    _, qg = _quantised(False, int8_dot=False)
    batches = _batches()
    cg = bias_correct(qg, batches)
    verify(cg)
    sess = ort.InferenceSession(emit(cg).SerializeToString(), providers=["CPUExecutionProvider"])
    for b in batches:
        np.testing.assert_allclose(sess.run(["y"], b)[0], run(cg, b, fake_quant=True)["y"],
                                   rtol=1e-4, atol=1e-4)
