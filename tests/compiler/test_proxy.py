"""Shared sensitivity plumbing and the data-free baselines: which layers are quantisable (vs the
ONNX graph), the emission grid choice, quantisation error vs the uniform-noise model, the
uniform baseline, and the METHODS table."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import ModelError
from compiler.frontend import load
from compiler.ir import Layer
from compiler.sensitivity import METHODS, proxy, weight_grid
from edgesim import zoo

BITS = (2, 3, 4, 6, 8)


def _weighted_nodes(model) -> list[str]:
    """Oracle: ONNX Conv and Gemm nodes, and MatMul nodes whose B is an initializer."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")
            or (n.op_type == "MatMul" and n.input[1] in inits)]


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_quantisable_layers_are_the_weighted_onnx_nodes(name: str) -> None:
    model = zoo.build(name)
    layers = proxy.quantisable_layers(load(model))
    assert len(layers) == len(_weighted_nodes(model))
    # the activation x activation matmuls of attention are not quantisable
    assert all(la.kind in ("conv", "linear") for la in layers)


def test_weight_grid_follows_emission_formats() -> None:
    conv, linear = Layer("c", "conv", ("x", "w"), ("y",)), Layer("l", "linear", ("x", "w"), ("y",))
    assert weight_grid(conv, 4, ndim=4) == proxy.WeightGrid("per_channel", 0)
    assert weight_grid(linear, 8) == proxy.WeightGrid("per_channel", 0)
    for bits in (2, 3, 4):  # MatMulNBits: blocks of 32 along K
        assert weight_grid(linear, bits) == proxy.WeightGrid("per_block", 0, 32)
    matmul = Layer("m", "matmul", ("x", "w"), ("y",))  # constant B is [K, N]: channels last
    assert weight_grid(matmul, 4) == proxy.WeightGrid("per_block", 1, 32)
    assert weight_grid(matmul, 6) == proxy.WeightGrid("per_channel", 1)


@pytest.mark.parametrize(("kind", "shape", "bits", "rel"), [
    ("conv", (16, 8, 3, 3), 8, 0.05), ("conv", (16, 8, 3, 3), 6, 0.05),
    ("linear", (24, 256), 8, 0.05), ("linear", (24, 256), 4, 0.15)])
def test_quant_error_matches_uniform_noise_model(kind: str, shape: tuple, bits: int,
                                                 rel: float) -> None:
    # Rounding to a grid of step d leaves errors ~ uniform on [-d/2, d/2], of mean square d^2/12;
    # the symmetric narrow grid's step is max|w| / (2^(b-1) - 1) per channel (or per block).
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    layer = Layer("l", kind, ("x", "w"), ("y",))
    groups = w.reshape(shape[0], -1) if kind == "conv" or bits > 4 else w.reshape(-1, 32)
    step = np.abs(groups).max(axis=1) / (2 ** (bits - 1) - 1)
    expected = float((groups.shape[1] * step.astype(np.float64) ** 2 / 12).sum())
    assert proxy.quant_error(layer, w, bits) == pytest.approx(expected, rel=rel)


def test_proxy_omega_is_error_and_per_param_divides_by_size() -> None:
    g = load(zoo.build("digits_cnn"))
    plain = proxy.sensitivity(g, bits=BITS)
    per = proxy.sensitivity(g, bits=BITS, per_param=True)
    sizes = np.array([g.weights[g.layer(n).inputs[1]].size for n in plain.layers])
    np.testing.assert_allclose(per.omega * sizes[:, None], plain.omega, rtol=1e-12)
    assert np.all(np.diff(plain.omega, axis=1) < 0)  # more bits, less error


def test_uniform_is_layer_agnostic() -> None:
    g = load(zoo.build("digits_transformer"))
    sens = proxy.uniform(g, bits=BITS)
    assert np.all(sens.omega == sens.omega[0])
    np.testing.assert_allclose(sens.omega[0], [1 / 16, 1 / 64, 1 / 256, 1 / 4096, 1 / 65536])


def test_every_method_gives_one_row_per_quantisable_layer() -> None:
    data = zoo.load_digits_data()
    g = load(zoo.build("digits_cnn"), {"input": (20, 1, 8, 8)})
    x, y = data["x_calib"][:20], data["y_calib"][:20]
    assert set(METHODS) == {"hawq", "lrp", "proxy", "uniform"}
    for name, fn in METHODS.items():
        kw = {"max_iter": 3} if name == "hawq" else {}
        sens = fn(g, x, y, bits=(2, 4, 8), **kw)
        assert sens.method == name
        assert sens.layers == tuple(la.name for la in proxy.quantisable_layers(g))
        assert sens.omega.shape == (4, 3) and sens.score.shape == (4,)
        assert np.all(np.isfinite(sens.omega)) and np.all(sens.omega >= 0)


@pytest.mark.parametrize("bits", [(), (4, 4), (1, 4), (4, 9)])
def test_bad_bit_choices_are_model_errors(bits: tuple) -> None:
    with pytest.raises(ModelError, match="bits"):
        proxy.bit_choices(bits)
