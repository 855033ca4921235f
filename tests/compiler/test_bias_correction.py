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


CONVS = {  # name -> (input channels, weight shape, attributes)
    "3x3": (4, (6, 4, 3, 3), dict(pads=[1, 1, 1, 1])),
    "grouped strided dilated asymmetric": (4, (6, 2, 3, 2), dict(
        group=2, strides=[2, 3], dilations=[2, 1], pads=[1, 0, 2, 1])),
    "depthwise": (4, (4, 1, 3, 3), dict(group=4, strides=[2, 2], pads=[0, 1, 1, 0])),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_weight_only_conv_shift_is_the_mean_output_change_in_onnxruntime(name: str) -> None:
    """A W4 weight-only conv's measured shift (from its weight change and its input's windows,
    no second conv) equals the mean change of its output per channel in onnxruntime between
    the emitted model (not corrected) and the float source, over the same batches."""
    import onnxruntime as ort

    from compiler.bias_correction import output_shifts
    from compiler.emit import emit

    cin, wshape, attrs = CONVS[name]
    w = RNG.standard_normal(wshape).astype(np.float32)
    b = RNG.standard_normal(wshape[0]).astype(np.float32)
    source = graph_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)],
                         [("x", F, [2, cin, 9, 11])], [("y", F, None)], {"w": w, "b": b})
    g = load(source)
    qg = quantize(g, np.array([[4, 32]]), None, QuantOptions(bias_correction_bits=0))
    (layer,) = qg.layers
    assert eligible(layer, 4)
    mean = np.linspace(-1.0, 2.0, cin, dtype=np.float32).reshape(1, -1, 1, 1)
    batches = [{"x": RNG.standard_normal((2, cin, 9, 11)).astype(np.float32) + mean}
               for _ in range(3)]
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            for m in (emit(qg), source)]
    diff = np.mean([(runs[0].run(["y"], f)[0].astype(np.float64)
                     - runs[1].run(["y"], f)[0]) for f in batches], axis=0)
    expected = diff.mean(axis=(0, 2, 3))
    assert np.abs(expected).max() > 1e-3  # there is a shift to measure
    got = output_shifts(qg, batches, [layer])[layer.name]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
