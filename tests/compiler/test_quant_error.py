"""`proxy.quant_errors` (one numba pass per layer and bit choice) against the error spelled
out: `fake_quant_weight` (the emitted grid's codes, dequantised as onnxruntime does), minus
the weight, squared and summed in float64."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import ModelError
from compiler.ir import Graph, Layer
from compiler.quantizers import fake_quant_weight
from compiler.sensitivity import proxy

BITS = np.array([2, 3, 4, 6, 8])


def _spelled_out(layer: Layer, w: np.ndarray, bits: int) -> float:
    grid = proxy.weight_grid(layer, bits, w.ndim)
    q = fake_quant_weight(w, bits, grid.granularity, grid.axis, grid.block_size)
    diff = q.astype(np.float64) - w.astype(np.float64)
    return float(np.sum(diff * diff))


def _graph(kind: str, w: np.ndarray) -> tuple[Graph, Layer]:
    layer = Layer("l", kind, ("x", "w"), ("y",), {})
    return Graph("g", ("x",), ("y",), (layer,), {"w": w}, {}), layer


@pytest.mark.parametrize("kind,shape", [("conv", (16, 3, 3, 3)), ("conv", (8, 1, 5, 5)),
                                        ("linear", (24, 70)), ("matmul", (70, 24)),
                                        ("linear", (5, 32))])
def test_quant_errors_equal_the_spelled_out_error(kind: str, shape: tuple) -> None:
    rng = np.random.default_rng(len(shape) + shape[0])
    w = (rng.standard_t(3, size=shape) * 0.05).astype(np.float32)
    w[0] = 0.0  # an all-zero row (scale 1): zero error
    g, layer = _graph(kind, w)
    got = proxy.quant_errors(g, [layer], BITS)[0]
    want = [_spelled_out(layer, w, int(b)) for b in BITS]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert np.all(np.diff(got) < 0)  # each extra bit shrinks the error


def test_quant_errors_of_a_non_finite_weight_is_a_model_error() -> None:
    w = np.ones((4, 8), np.float32)
    w[1, 2] = np.nan
    g, layer = _graph("linear", w)
    with pytest.raises(ModelError):
        proxy.quant_errors(g, [layer], BITS)
