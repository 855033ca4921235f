"""ncnn copies a padded conv's input into a bordered blob before running it
(kernels.cpu_ncnn.padded_copy_bytes): which GEMM views count as padded, and the bytes."""

from __future__ import annotations

import pytest

from hwmodels.kernels import cpu_ncnn as N


@pytest.mark.parametrize("cin, cout, hw_in, hw_out, ksize, groups, padded", [
    (64, 64, 56, 56, 3, 1, True),       # 3x3 s1: 9 taps per input pixel
    (3, 32, 224, 112, 3, 1, True),      # 3x3 s2: 9 / 4 = 2.25
    (16, 32, 28, 28, 5, 1, True),       # 5x5 s1
    (32, 32, 112, 112, 3, 32, True),    # depthwise 3x3: k = 9 per group
    (64, 128, 56, 56, 1, 1, False),     # 1x1 s1: ratio 1
    (64, 128, 56, 28, 1, 1, False),     # 1x1 s2: ratio 0.25
])
def test_which_convs_ncnn_pads(cin, cout, hw_in, hw_out, ksize, groups, padded):
    k = cin // groups * ksize * ksize
    ain = cin * hw_in * hw_in
    got = N.padded_copy_bytes(hw_out * hw_out, k, groups, ain, 2.0)
    assert got == (2.0 * ain * 2.0 if padded else 0.0)  # read the input + write the copy


def test_bytes_scale_with_the_element_width():
    # int8 convs pad the quantised int8 blob (forward_int8_arm: quantize, then make_padding)
    ain = 64 * 56 * 56
    assert N.padded_copy_bytes(56 * 56, 576, 1, ain, 1.0) == 2.0 * ain
    assert N.padded_copy_bytes(56 * 56, 576, 1, ain, 4.0) == 8.0 * ain

