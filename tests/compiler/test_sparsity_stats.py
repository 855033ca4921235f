"""Operand statistics of MAC layers: the GEMM operands against the ops' own forward, lane
densities against direct counting."""

import numpy as np
import pytest

from compiler.frontend import load
from compiler.ir import Layer
from compiler.ops import OPS
from compiler.sparsity import gemm_operands, operand_stats
from edgesim.zoo import build, load_digits_data

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("strides, pads, dilations, group", [
    ((1, 1), (1, 1, 1, 1), (1, 1), 1), ((2, 1), (0, 1, 2, 0), (1, 2), 1),
    ((1, 2), (1, 0, 0, 1), (2, 1), 2), ((1, 1), (0, 0, 0, 0), (1, 1), 4)])
def test_conv_operands_multiply_to_the_conv_output(strides, pads, dilations, group):
    x = RNG.normal(size=(2, 4, 7, 6)).astype(np.float32)
    w = RNG.normal(size=(8, 4 // group, 3, 2)).astype(np.float32)
    attrs = dict(strides=strides, pads=pads, dilations=dilations, group=group)
    (y,) = OPS["conv"].forward(x, w, **attrs)
    a, wk = gemm_operands(Layer("c", "conv", ("x", "w"), ("y",), attrs), [x, w])
    out = a @ wk  # [G, N*oh*ow, Cout/G]
    n, cout, oh, ow = y.shape
    want = y.reshape(n, group, cout // group, oh * ow).transpose(1, 0, 3, 2).reshape(
        group, n * oh * ow, cout // group)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_linear_and_matmul_operands():
    x = RNG.normal(size=(3, 5, 6)).astype(np.float32)
    w = RNG.normal(size=(4, 6)).astype(np.float32)
    a, wk = gemm_operands(Layer("l", "linear", ("x", "w"), ("y",)), [x, w])
    np.testing.assert_allclose(a @ wk, OPS["linear"].forward(x, w)[0].reshape(1, 15, 4),
                               rtol=1e-5)
    y2 = RNG.normal(size=(1, 6, 2)).astype(np.float32)
    a, wk = gemm_operands(Layer("m", "matmul", ("x", "y"), ("z",)), [x, y2])
    np.testing.assert_allclose(a @ wk, OPS["matmul"].forward(x, y2)[0], rtol=1e-5)


def test_lane_densities_count_zeros_per_row_and_sample():
    data = load_digits_data()["x_calib"][:6]
    g = load(build("digits_cnn"), {"input": (3, 1, 8, 8)})
    stats = operand_stats(g, [{"input": data[:3]}, {"input": data[3:]}], ["conv1/Conv"])
    s = stats["conv1/Conv"]
    # conv1 reads the image: 3x3 windows with padding 1; lane (oh, ow) of each sample
    padded = np.pad(data[:, 0], ((0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    per_sample = (win != 0).reshape(6, 64, 9).mean(axis=2)
    np.testing.assert_allclose(s.lane_density[0], per_sample.mean(axis=0), rtol=1e-12)
    assert s.samples == 6 and s.k == 9
    assert s.density == pytest.approx(per_sample.mean())
    np.testing.assert_array_equal(s.w_col_nnz[0], (g.weights[g.layer("conv1/Conv").inputs[1]]
                                                   != 0).reshape(16, -1).sum(axis=1))
