"""`column_grams` against the Gram matrix of im2col columns built here by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from compiler.sensitivity.column_gram import column_grams


def _brute_columns(x: np.ndarray, kernel: tuple[int, ...], pads: tuple[int, ...],
                   dilations: tuple[int, ...], group: int) -> list[np.ndarray]:
    """Per group, the stride-1 im2col matrix `[Cg*prod(k), P]` of `x` `[1, C, *sp]`, one
    entry at a time: row (channel, tap), column output position, zero outside `x`."""
    nsp, cg = x.ndim - 2, x.shape[1] // group
    out = [s + pads[i] + pads[nsp + i] - (k - 1) * d
           for i, (s, k, d) in enumerate(zip(x.shape[2:], kernel, dilations))]
    taps = list(itertools.product(*(range(k) for k in kernel)))
    mats = []
    for gi in range(group):
        b = np.zeros((cg * len(taps), int(np.prod(out))))
        for c, (ti, tap), (pi, pos) in itertools.product(
                range(cg), enumerate(taps), enumerate(itertools.product(*map(range, out)))):
            at = [p + t * d - pads[i] for i, (p, t, d) in enumerate(zip(pos, tap, dilations))]
            if all(0 <= a < s for a, s in zip(at, x.shape[2:])):
                b[c * len(taps) + ti, pi] = x[(0, gi * cg + c, *at)]
        mats.append(b)
    return mats


@pytest.mark.parametrize("shape,kernel,pads,dilations,group", [
    ((1, 6, 12), (5,), (0, 0), (1,), 1),                   # magika's kind: 1-D, no padding
    ((1, 8, 9, 7), (3, 2), (1, 0, 2, 1), (2, 1), 2),        # asymmetric pads, dilated, grouped
    ((1, 5, 4, 4), (3, 3), (1, 1, 1, 1), (1, 1), 1),        # a deep 3x3 layer: few positions
])
def test_column_grams_equal_the_brute_force_gram(shape, kernel, pads, dilations,
                                                 group) -> None:
    x = np.random.default_rng(0).standard_normal(shape)
    got = column_grams(x, kernel, strides=(1,) * len(kernel), pads=pads,
                       dilations=dilations, group=group)
    assert got is not None
    want = [b.T @ b for b in _brute_columns(x, kernel, pads, dilations, group)]
    assert len(got) == group
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_column_grams_keep_float32_inputs_in_float32() -> None:
    x = np.random.default_rng(1).standard_normal((1, 6, 12)).astype(np.float32)
    got = column_grams(x, (5,), strides=(1,), pads=(0, 0), dilations=(1,), group=1)
    assert got is not None and got[0].dtype == np.float32
    want = [b.T @ b for b in _brute_columns(x.astype(np.float64), (5,), (0, 0), (1,), 1)]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape,kernel,strides", [
    ((1, 4, 9, 9), (3, 3), (2, 2)),   # strided: the windows are not shifts of one another
    ((2, 4, 6, 6), (3, 3), (1, 1)),   # a batch: columns of two samples
    ((1, 4, 30, 30), (1, 1), (1, 1)),  # 1x1 on many positions: the input Gram costs more
])
def test_column_grams_decline_where_they_do_not_apply_or_cost_more(shape, kernel,
                                                                    strides) -> None:
    x = np.ones(shape, np.float32)
    assert column_grams(x, kernel, strides=strides, pads=(0,) * 2 * len(kernel),
                        dilations=(1,) * len(kernel), group=1) is None
