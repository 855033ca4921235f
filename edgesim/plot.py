"""Plots: 2-D Pareto front plots and a multi-objective (parallel coordinates) summary.

The only module that imports matplotlib. It draws on `matplotlib.figure.Figure` objects with
the Agg canvas directly (no pyplot: no global figure state, no display needed). Axis labels
come from column names, units from their suffixes (`latency_s` -> "latency (s)"); an axis whose
positive values span more than two decades is drawn on a log scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.patches import Patch

from compiler.atomic import atomic_open

# Column-name suffix -> unit shown on the axis (units live in the names; STYLE R10).
UNITS: Mapping[str, str] = {
    "_s": "s", "_ms": "ms", "_j": "J", "_mj": "mJ", "_pj": "pJ", "_bytes": "bytes",
    "_mb": "MB", "_ips": "inferences/s",
    "_ghz": "GHz", "_kib": "KiB", "_gbps": "GB/s", "_nm": "nm", "_bits": "bits",
}
# Names whose unit is not a suffix.
NAMED_UNITS: Mapping[str, str] = {
    "area_proxy": "MAC-bits + SRAM bytes", "util": "fraction of peak",
    "total_sens": "sum of layer sensitivities", "sensitivity": "sum of layer sensitivities",
}
DECADES_FOR_LOG = 2.0
MARK_STYLES = ("*", "D", "P", "X", "s", "^", "v", "o")


def axis_label(column: str) -> str:
    """Readable label with unit: "resnet50.latency_s" -> "resnet50 latency (s)"."""
    prefix, _, name = column.rpartition(".")
    unit = NAMED_UNITS.get(name)
    stem = name
    if unit is None:
        suffix = next((s for s in sorted(UNITS, key=len, reverse=True) if name.endswith(s)), None)
        if suffix is not None:
            stem, unit = name[:-len(suffix)], UNITS[suffix]
    words = " ".join(w for w in (prefix.replace(".", " "), stem.replace("_", " ")) if w)
    return f"{words} ({unit})" if unit else words


def wants_log(values: Sequence[float] | np.ndarray) -> bool:
    """True when the finite values are all positive and span more than two decades."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.min() <= 0:
        return False
    return bool(np.log10(v.max() / v.min()) > DECADES_FOR_LOG)


def _new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def front_plot(points: Mapping[str, Sequence[float] | np.ndarray], x: str, y: str, *,
               color: str | None = None, highlight: Sequence[bool] | np.ndarray | None = None,
               marks: Mapping[str, Sequence[float]] | None = None,
               title: str = "") -> Figure:
    """Scatter of two objectives with the non-dominated points drawn as a front.

    Args:
        points: columns by name (each a sequence of equal length).
        x, y: the columns on the axes (units from their names, see `axis_label`).
        color: a column that colours the points (with a colour bar); None: one colour.
        highlight: bool per point, the front: drawn on top, joined by a staircase line.
        marks: named reference points, e.g. {"fp32": (x, y), "uniform-8": ..., "chosen": ...}:
            drawn as large markers with their names.
        title: the axes title.

    Returns:
        The figure (save it with `save`).
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    xs, ys = np.asarray(points[x], float), np.asarray(points[y], float)
    shade = {"color": "tab:blue"} if color is None else {
        "c": np.asarray(points[color], float), "cmap": "viridis"}
    drawn = ax.scatter(xs, ys, s=12, alpha=0.5, label="designs", **shade)
    if color is not None:
        fig.colorbar(drawn, ax=ax, label=axis_label(color))
    if highlight is not None:
        _draw_front(ax, xs, ys, np.asarray(highlight, bool))
    for i, (name, (mx, my)) in enumerate((marks or {}).items()):
        ax.scatter([mx], [my], marker=MARK_STYLES[i % len(MARK_STYLES)], s=120,
                   edgecolors="black", zorder=5, label=name)
        # staggered offsets: marks close together (fp32 and uniform-8) keep readable labels
        ax.annotate(name, (mx, my), textcoords="offset points", xytext=(8, 8 - 14 * (i % 3)),
                    fontsize="small")
    _scale_axes(ax, np.r_[xs, [m[0] for m in (marks or {}).values()]],
                np.r_[ys, [m[1] for m in (marks or {}).values()]])
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def _draw_front(ax: Axes, xs: np.ndarray, ys: np.ndarray, front: np.ndarray) -> None:
    order = np.argsort(xs[front], kind="stable")
    fx, fy = xs[front][order], ys[front][order]
    ax.step(fx, fy, where="post", color="black", linewidth=1.0, alpha=0.7)
    ax.scatter(fx, fy, s=28, color="tab:red", edgecolors="black", zorder=4,
               label=f"non-dominated ({int(front.sum())})")


def _scale_axes(ax: Axes, xs: np.ndarray, ys: np.ndarray) -> None:
    if wants_log(xs):
        ax.set_xscale("log")
    if wants_log(ys):
        ax.set_yscale("log")


def normalised(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Values mapped to [0, 1] per column: min -> 0, max -> 1 (log10 first when `wants_log`);
    a constant column maps to 0.5."""
    v = np.asarray(values, dtype=np.float64)
    v = np.log10(v) if wants_log(v) else v
    low, high = np.nanmin(v), np.nanmax(v)
    return np.full(v.shape, 0.5) if high == low else (v - low) / (high - low)


def summary_plot(points: Mapping[str, Sequence[float] | np.ndarray], columns: Sequence[str], *,
                 color: str | None = None, title: str = "") -> Figure:
    """Parallel coordinates of several objectives: one polyline per point.

    Each column gets a vertical axis scaled to its own range (see `normalised`), labelled with
    its minimum and maximum; lines are coloured by `color` (default: the first column).

    Returns:
        The figure; its first LineCollection holds one polyline per point.
    """
    fig = _new_figure(max(6.4, 1.8 * len(columns)), 4.8)
    ax = fig.add_subplot()
    ys = np.stack([normalised(points[c]) for c in columns], axis=1)
    xs = np.arange(len(columns), dtype=np.float64)
    lines = LineCollection([np.column_stack([xs, row]) for row in ys], cmap="viridis",
                           linewidths=1.0, alpha=0.7)
    lines.set_array(np.asarray(points[color or columns[0]], dtype=np.float64))
    ax.add_collection(lines)
    fig.colorbar(lines, ax=ax, label=axis_label(color or columns[0]))
    for i, c in enumerate(columns):
        ax.axvline(i, color="grey", linewidth=0.8)
        v = np.asarray(points[c], dtype=np.float64)
        ax.annotate(f"{np.nanmin(v):.3g}", (i, 0), textcoords="offset points", xytext=(3, -12),
                    fontsize="small")
        ax.annotate(f"{np.nanmax(v):.3g}", (i, 1), textcoords="offset points", xytext=(3, 4),
                    fontsize="small")
    ax.set_xticks(xs, [axis_label(c) for c in columns], rotation=20, ha="right")
    ax.set_xlim(-0.2, len(columns) - 0.8)
    ax.set_ylim(-0.08, 1.1)
    ax.set_yticks([0, 1], ["min", "max"])
    ax.set_title(title)
    return fig


# hwmodels.cost.BOUND_NAMES
BOUND_COLORS: Mapping[str, str] = {"compute": "tab:red", "onchip": "tab:orange",
                                   "dram": "tab:blue", "overhead": "tab:grey"}
MAX_NAMED_LAYERS = 40  # beyond this, the x axis shows layer indices instead of names


def layer_plot(names: Sequence[str], w_bits: Sequence[int], a_bits: Sequence[int],
               latency_ms: Sequence[float], bound: Sequence[str], title: str = "") -> Figure:
    """Per layer: the chosen weight/activation bits (top) and the predicted latency, coloured
    by what bounds it (bottom; log scale when the layers span more than two decades)."""
    n = len(names)
    fig = _new_figure(max(6.4, min(18.0, 0.25 * n + 3)), 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = np.arange(n)
    bars(top, w_bits, ["tab:purple"] * n)
    top.plot(xs, a_bits, "k_", markersize=10, label="activation bits")
    top.set_ylabel("bits")
    top.set_yticks([2, 4, 8, 16, 32])
    top.legend([Patch(color="tab:purple"), *top.get_lines()], ["weight bits", "activation bits"],
               loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if wants_log(latency_ms):
        bottom.set_yscale("log")
    bars(bottom, latency_ms, [BOUND_COLORS.get(b, "tab:olive") for b in bound])
    bottom.set_ylabel("predicted latency (ms)")
    shown = [name for name in BOUND_COLORS if name in bound]
    bottom.legend([Patch(color=BOUND_COLORS[name]) for name in shown],
                  [f"{name}-bound" for name in shown], loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if n <= MAX_NAMED_LAYERS:
        bottom.set_xticks(xs, [s[-24:] for s in names], rotation=70, ha="right",
                          fontsize="x-small")
    else:
        bottom.set_xlabel("layer (index)")
    top.set_title(title)
    return fig


def bars(ax: Axes, heights: Sequence[float], colors: Sequence[str],
         width: float = 0.8) -> PolyCollection:
    """A bar per value at x = 0, 1, ... as one collection (one artist, not a patch per bar:
    a 300-layer model's bars cost ~1 s of drawing as patches); its paths are the bars, in
    order."""
    h = np.asarray(heights, dtype=np.float64)
    left = np.arange(h.size) - width / 2
    zero = np.zeros_like(h)
    verts = np.stack([np.column_stack(c) for c in ((left, zero), (left, h),
                                                     (left + width, h), (left + width, zero))],
                     axis=1)
    drawn = PolyCollection(list(verts), facecolors=colors, edgecolors="none")
    drawn.sticky_edges.y.append(0.0)  # as `Axes.bar`: no margin below the bars' base
    ax.add_collection(drawn)
    ax.autoscale_view()
    return drawn


def save(fig: Figure, path: str | Path, dpi: int = 120, *, make_folder: bool = True) -> Path:
    """Write `fig` as PNG atomically (a temporary file renamed into place), creating its
    folder unless `make_folder` is False (then a missing folder is an error)."""
    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # one layout-and-render pass (savefig makes two, same bytes)
    with atomic_open(path, "wb") as f:
        imsave(cast(BinaryIO, f), np.asarray(canvas.buffer_rgba()), format="png", dpi=dpi)
    return path
