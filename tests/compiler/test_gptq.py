"""GPTQ rounding against brute force and round-to-nearest on least-squares problems, bias
correction against its closed form, and block size as a size/accuracy choice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from compiler import quantizers as Q
from compiler.errors import ModelError
from compiler.gptq import bias_correction, gptq_round

RNG = np.random.default_rng(23)


def _correlated_inputs(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    mix = rng.standard_normal((k, k)) + 2.0 * np.eye(k)
    return rng.standard_normal((n, k)) @ mix  # correlated channels, as real activations


def _output_error(x: np.ndarray, w: np.ndarray, qt: Q.QuantizedTensor) -> np.ndarray:
    """||X (w_r - q_r)||^2 per output row r."""
    d = x @ (w.astype(np.float64) - Q.dequantize(qt)).T
    return np.sum(d * d, axis=0)


def test_gptq_is_between_the_brute_force_optimum_and_round_to_nearest() -> None:
    x = _correlated_inputs(200, 4, RNG)
    w = RNG.standard_normal((6, 4)).astype(np.float32)
    rtn = Q.quantize_weight(w, 2, "per_channel", axis=0, symmetric=False)
    gq = gptq_round(w, x.T @ x, rtn, damp=0.0)
    scale, zp = (np.broadcast_to(a.reshape(-1, 1), w.shape).astype(np.float64)
                 for a in (rtn.scale, rtn.zero_point))
    codes = np.array(list(itertools.product(range(4), repeat=4)))  # every 2-bit code vector
    for r in range(6):
        values = (codes - zp[r]) * scale[r]                          # [256, 4] on the grid
        errs = np.sum((x @ (w[r] - values).T) ** 2, axis=0)
        best = errs.min()
        e_g, e_r = _output_error(x, w, gq)[r], _output_error(x, w, rtn)[r]
        assert best - 1e-9 <= e_g <= e_r + 1e-9 * max(1.0, e_r), (r, best, e_g, e_r)


@pytest.mark.parametrize("bits,granularity,block", [(4, "per_block", 32), (3, "per_channel",
                                                                           None)])
def test_gptq_lowers_layer_output_error_against_rtn(bits: int, granularity: str,
                                                    block: int | None) -> None:
    both = _correlated_inputs(1024, 128, RNG)
    x, held_out = both[:512], both[512:]  # one distribution; GPTQ sees only the first half
    w = (RNG.standard_normal((48, 128)) / 8).astype(np.float32)
    rtn = Q.quantize_weight(w, bits, granularity, axis=0, block_size=block)
    gq = gptq_round(w, x.T @ x, rtn)
    assert np.array_equal(gq.scale, rtn.scale)  # same grid: only the codes move
    lo, hi = Q.code_range(bits, True)
    assert gq.q.min() >= lo and gq.q.max() <= hi
    for data in (x, held_out):
        assert _output_error(data, w, gq).sum() < 0.7 * _output_error(data, w, rtn).sum()


def test_gptq_is_rtn_when_the_inputs_are_uncorrelated_and_undamped() -> None:
    """A diagonal Hessian moves no error between channels: GPTQ reduces to RTN exactly."""
    w = RNG.standard_normal((5, 16)).astype(np.float32)
    rtn = Q.quantize_weight(w, 4, "per_channel", axis=0)
    gq = gptq_round(w, np.diag(RNG.uniform(0.5, 2.0, 16)), rtn, damp=0.0)
    np.testing.assert_array_equal(gq.q, rtn.q)


def test_dead_channels_and_bad_shapes() -> None:
    x = _correlated_inputs(64, 8, RNG)
    x[:, 2] = 0.0
    w = RNG.standard_normal((3, 8)).astype(np.float32)
    rtn = Q.quantize_weight(w, 4, "per_channel", axis=0)
    gq = gptq_round(w, x.T @ x, rtn)
    assert np.all(Q.dequantize(gq)[:, 2] == 0.0)  # an input that is always 0 gets weight 0
    with pytest.raises(ModelError, match="do not fit"):
        gptq_round(w, np.eye(7), rtn)


def test_bias_correction_zeroes_the_mean_output_error() -> None:
    x = _correlated_inputs(300, 16, RNG) + 3.0  # a non-zero mean, as after a ReLU
    w = RNG.standard_normal((4, 16)).astype(np.float32)
    qt = Q.quantize_weight(w, 3, "per_channel", axis=0)
    delta = bias_correction(w, qt, x.mean(axis=0))
    before = (x @ w.T.astype(np.float64)) - (x @ Q.dequantize(qt).T)
    after = before - delta
    assert np.abs(before.mean(axis=0)).max() > 0.05
    np.testing.assert_allclose(after.mean(axis=0), 0.0, atol=1e-5)


def test_smaller_blocks_cost_size_and_buy_accuracy() -> None:
    x = _correlated_inputs(512, 256, RNG)
    w = (RNG.standard_normal((32, 256)) * np.exp(RNG.standard_normal(256))).astype(np.float32)
    errs = []
    for block in (128, 64, 32):
        rtn = Q.quantize_weight(w, 4, "per_block", axis=0, block_size=block)
        errs.append(_output_error(x, w, gptq_round(w, x.T @ x, rtn)).sum())
        assert rtn.scale.size == 32 * 256 // block  # one scale per block: more with smaller
    assert errs[0] > errs[1] > errs[2]
