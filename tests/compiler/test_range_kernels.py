"""The one-pass rounding error (`compiler.range_kernels`) against numpy's five float32 passes
and against `fake_quant_activation`, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.activation_quant import ActivationParams, fake_quant_activation
from compiler.quantizers import storage_range
from compiler.range_choice import rounding_error
from compiler.range_kernels import rounding_error as kernel


def _numpy(x: np.ndarray, scale: np.float32, lo: int, hi: int) -> np.ndarray:
    d = x / scale
    np.rint(d, out=d)
    np.clip(d, lo, hi, out=d)
    d *= scale
    d -= x
    return d


def _hard_values(rng: np.random.Generator, scale: np.float32, n: int) -> np.ndarray:
    """Values at rounding ties (k + 0.5 steps), beyond the grid, tiny, huge, zero, NaN."""
    ties = ((rng.integers(-300, 300, n) + 0.5) * scale).astype(np.float32)
    wide = rng.normal(0, 200 * float(scale), n).astype(np.float32)
    odd = np.array([0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38, np.nan], np.float32)
    return np.concatenate([ties, wide, odd])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-12, 6),
       zp=st.integers(0, 255), bits=st.sampled_from([4, 8]), signed=st.booleans())
def test_equals_numpys_float32_passes_bit_for_bit(seed: int, log_scale: float, zp: int,
                                                  bits: int, signed: bool) -> None:
    rng = np.random.default_rng(seed)
    scale = np.float32(2.0 ** log_scale)
    qmin, qmax = storage_range(bits, signed)
    zp = 0 if signed else zp % (qmax + 1)
    x = _hard_values(rng, scale, 490).reshape(-1, 7, 3)[:, :, ::2]  # strided view
    got, want = kernel(x, scale, qmin - zp, qmax - zp), _numpy(x.copy(), scale, qmin - zp,
                                                               qmax - zp)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # NaN where numpy has NaN, else the same bits
    assert np.array_equal(got.view(np.uint32)[~np.isnan(got)] | 0x80000000,
                          want.view(np.uint32)[~np.isnan(want)] | 0x80000000)


def test_is_fake_quant_minus_x() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 3, (4, 16, 9, 9)).astype(np.float32)
    p = ActivationParams(np.float32(0.05), 131, 8, False)
    want = fake_quant_activation(x, p.scale, p.zero_point, 8, False) - x
    np.testing.assert_array_equal(np.abs(rounding_error(x, p)), np.abs(want))
