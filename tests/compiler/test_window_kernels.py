"""The polyphase plane layout against numpy's own sliding windows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ops.conv import window_view
from compiler.window_kernels import PlaneWindows


@st.composite
def geometries(draw) -> tuple[PlaneWindows, np.ndarray]:
    nsp = draw(st.integers(1, 3))
    spatial, begins, extent, kernel, strides, dilations, out = ([] for _ in range(7))
    for _ in range(nsp):
        k, s, d = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        size, b = draw(st.integers(1, 7)), draw(st.integers(0, 2))
        eff = (k - 1) * d + 1
        o = draw(st.integers(1, 4))
        if draw(st.integers(0, 3)) == 0:  # a unit axis (a 1-D conv as [N, C, L, 1]), which
            size, b, k, o = 1, 0, 1, 1     # the layout skips: often enough to be exercised
            eff = 1
        spatial.append(size)
        begins.append(b)
        extent.append((o - 1) * s + eff)   # may cut the input off, as ceil-mode pooling does
        kernel.append(k)
        strides.append(s)
        dilations.append(d)
        out.append(o)
    pw = PlaneWindows(*map(tuple, (spatial, begins, extent, kernel, strides, dilations, out)))
    x = np.random.default_rng(draw(st.integers(0, 99))).standard_normal((2, 3) + pw.spatial)
    return pw, x


def _padded(pw: PlaneWindows, x: np.ndarray, fill: float) -> np.ndarray:
    """x on the padded plane of shape `extent`, straight from the definition."""
    xp = np.full(x.shape[:2] + pw.extent, fill)
    src = tuple(slice(0, max(0, min(i, e - b))) for i, b, e in zip(pw.spatial, pw.begins,
                                                                     pw.extent))
    dst = tuple(slice(b, b + s.stop) for b, s in zip(pw.begins, src))
    xp[(Ellipsis,) + dst] = x[(Ellipsis,) + src]
    return xp


@settings(max_examples=150, deadline=None)
@given(geometries())
def test_taps_read_the_windows(case) -> None:
    pw, x = case
    planes = pw.planes(x, -7.0, np.float64)
    want = window_view(_padded(pw, x, -7.0), pw.kernel, pw.strides, pw.dilations, pw.out)
    want = want.reshape(6, int(np.prod(pw.out)), -1)                  # [planes, out, taps]
    grid = np.arange(pw.run)
    for k, tap in enumerate(pw.taps):
        got = pw.outputs(planes[:, tap + grid]).reshape(6, -1)
        np.testing.assert_array_equal(got, want[:, :, k])


@settings(max_examples=100, deadline=None)
@given(geometries())
def test_unplanes_is_the_adjoint_of_planes(case) -> None:
    pw, x = case
    y = np.random.default_rng(1).standard_normal((6, pw.plane_size))
    lhs = np.vdot(pw.planes(x, 0.0, np.float64), y)
    rhs = np.vdot(x, pw.unplanes(y, (2, 3)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(geometries())
def test_grid_places_outputs_and_zeros_the_rest(case) -> None:
    pw, _ = case
    g = np.random.default_rng(2).standard_normal((2, 3) + pw.out)
    grid = pw.grid(g, np.float64)
    np.testing.assert_array_equal(pw.outputs(grid).reshape(g.shape), g)
    assert np.count_nonzero(grid) == np.count_nonzero(g)


def test_serial_gives_identical_results_and_restores_the_thread_count() -> None:
    """One thread computes the same depthwise and im2col conv gradients bit for bit (every
    parallel iteration writes its own rows), and the thread count comes back after."""
    import numba

    from compiler.ops import OPS
    from compiler.window_kernels import serial

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 9, 11)).astype(np.float32)
    kw = dict(strides=(2, 1), pads=(1, 0, 1, 2), dilations=(1, 2))
    for shape, group in [((6, 1, 3, 3), 6), ((4, 6, 3, 3), 1)]:
        w = rng.standard_normal(shape).astype(np.float32)
        y = OPS["conv"].forward(x, w, group=group, **kw)
        g = (rng.standard_normal(y[0].shape).astype(np.float32),)
        ref = OPS["conv"].vjp(g, (x, w), y, group=group, **kw)
        before = numba.get_num_threads()
        with serial():
            assert numba.get_num_threads() == 1
            got = OPS["conv"].vjp(g, (x, w), y, group=group, **kw)
        assert numba.get_num_threads() == before
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)
