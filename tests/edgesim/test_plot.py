"""Plots: labels carry units, log axes exactly when a range spans more than two decades, the
front and named marks are drawn where they are, parallel coordinates hold the normalised
values, and PNGs are written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection

from edgesim.plot import axis_label, front_plot, save, summary_plot, wants_log


@pytest.mark.parametrize("column,label", [
    ("latency_s", "latency (s)"), ("resnet50.energy_j", "resnet50 energy (J)"),
    ("weight_bytes", "weight (bytes)"), ("throughput_ips", "throughput (inferences/s)"),
    ("clock_ghz", "clock (GHz)"), ("ifmap_sram_kib", "ifmap sram (KiB)"),
    ("dram_bandwidth_gbps", "dram bandwidth (GB/s)"),
    ("area_proxy", "area proxy (MAC-bits + SRAM bytes)"),
    ("m.alloc.total_sens", "m alloc total sens (sum of layer sensitivities)"),
    ("rows", "rows"),
])
def test_axis_labels_carry_units(column: str, label: str) -> None:
    assert axis_label(column) == label


def test_log_scale_only_beyond_two_decades() -> None:
    assert not wants_log([1.0, 100.0])          # exactly two decades
    assert wants_log([1.0, 100.1])
    assert not wants_log([-1.0, 1e6])           # not all positive
    assert wants_log([np.inf, 1e-3, 1.0])       # non-finite values ignored (1e-3 .. 1 = 3)
    assert not wants_log([5.0])


def _offsets(ax, label: str) -> np.ndarray:  # noqa: ANN001
    (coll,) = [c for c in ax.collections
               if isinstance(c, PathCollection) and c.get_label().startswith(label)]
    return np.asarray(coll.get_offsets())


def test_front_plot_draws_front_marks_and_scales() -> None:
    rng = np.random.default_rng(0)
    x = 10.0 ** rng.uniform(0, 4, 50)           # four decades: log axis
    y = rng.uniform(1.0, 5.0, 50)               # under one decade: linear
    front = np.zeros(50, dtype=bool)
    front[[3, 7, 11]] = True
    marks = {"fp32": (2.0, 4.0), "chosen": (30.0, 1.5)}
    fig = front_plot({"latency_s": x, "energy_j": y, "rows": y}, "latency_s", "energy_j",
                     color="rows", highlight=front, marks=marks, title="t")
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "linear")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("latency (s)", "energy (J)")
    got = _offsets(ax, "non-dominated")
    order = np.argsort(x[front])
    np.testing.assert_array_equal(got, np.column_stack([x[front][order], y[front][order]]))
    for name, point in marks.items():
        np.testing.assert_array_equal(_offsets(ax, name), [point])
        assert name in [t.get_text() for t in ax.texts]
    assert fig.axes[1].get_ylabel() == "rows"   # the colour bar


def test_summary_plot_holds_normalised_polylines() -> None:
    a = np.array([1.0, 1e3, 1e6, 10.0])         # six decades: normalised in log10
    b = np.array([2.0, 4.0, 3.0, 2.5])
    fig = summary_plot({"a_s": a, "b_j": b}, ["a_s", "b_j"])
    (lines,) = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    segments = lines.get_segments()
    assert len(segments) == 4
    want_a = np.log10(a) / 6.0                  # (log10 a - 0) / (6 - 0)
    want_b = (b - 2.0) / 2.0
    for seg, ya, yb in zip(segments, want_a, want_b):
        np.testing.assert_allclose(seg, [[0.0, ya], [1.0, yb]], rtol=0, atol=1e-12)


def test_save_writes_a_png_atomically(tmp_path: Path) -> None:
    fig = front_plot({"x_s": [1.0, 2.0], "y_j": [2.0, 1.0]}, "x_s", "y_j")
    path = save(fig, tmp_path / "sub" / "front.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["front.png"]  # no temporary left


def test_save_writes_what_savefig_writes(tmp_path: Path) -> None:
    """`save` renders once and encodes the canvas itself; matplotlib's own savefig (two
    passes) is the oracle, byte for byte, for a front with a colour bar and a layer plot."""
    import io

    from edgesim.plot import layer_plot

    def front():  # type: ignore[no-untyped-def]
        return front_plot({"x_s": [1.0, 2.0, 3.0], "y_j": [3.0, 1.0, 2.0], "c_w": [1, 2, 3]},
                          "x_s", "y_j", color="c_w", highlight=[True, True, False],
                          marks={"fp32": (1.5, 2.5)}, title="t")

    def layers():  # type: ignore[no-untyped-def]
        return layer_plot([f"layer_{i}" for i in range(50)], [8, 4] * 25, [8, 32] * 25,
                          list(np.geomspace(1e-4, 10, 50)), ["compute", "dram"] * 25, "t")

    for make in (front, layers):
        want = io.BytesIO()
        make().savefig(want, format="png", dpi=120)
        got = save(make(), tmp_path / "fig.png").read_bytes()
        assert got == want.getvalue(), make.__name__
