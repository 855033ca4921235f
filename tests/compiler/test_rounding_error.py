"""`range_choice.rounding_error` is `fake_quant_activation(x) - x` (the rule onnxruntime's
Q/DQ pair computes, tested against onnxruntime in test_quantizers), bit for bit, across
widths, signedness, zero points, ties, saturation far past 2^24 and zeros."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.activation_quant import ActivationParams, fake_quant_activation
from compiler.range_choice import rounding_error


def _samples(scale: float) -> np.ndarray:
    rng = np.random.default_rng(4)
    ties = (np.arange(-300, 300) + 0.5).astype(np.float32) * np.float32(scale)  # half-way
    wide = rng.standard_normal(4000).astype(np.float32) * np.float32(200 * scale)
    huge = np.array([3e7, -3e7, 1e30, -1e30], np.float32) * np.float32(scale)
    return np.concatenate([ties, wide, huge, np.zeros(4, np.float32)]).reshape(4, -1)


@pytest.mark.parametrize("bits,signed,zp", [(8, False, 0), (8, False, 131), (8, False, 255),
                                            (8, True, 0), (8, True, -7), (4, False, 9),
                                            (4, True, 0), (16, True, 0)])
def test_rounding_error_is_the_fake_quant_difference(bits: int, signed: bool, zp: int) -> None:
    scale = 0.0371
    x = _samples(scale)
    want = fake_quant_activation(x, scale, zp, bits, signed) - x
    got = rounding_error(x, ActivationParams(np.float32(scale), zp, bits, signed))
    assert got.dtype == np.float32 and np.abs(want).max() > 0
    np.testing.assert_array_equal(got, want)  # -0.0 == 0.0: the sign of zero may differ
