"""The compile's figures: valid PNGs that show what report.json says (the front's points,
the chosen mark, the layers' bits and latencies); a failed compile leaves none behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgesim.plot
from edgesim import zoo
from edgesim.errors import UserError
from edgesim.pipeline import CompileOptions, compile_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _valid_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()  # checks every chunk's CRC
    with Image.open(path) as im:
        assert im.size[0] >= 400 and im.size[1] >= 300
        assert len(np.unique(np.asarray(im.convert("L")))) > 2  # something was drawn


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """digits_cnn compiled for rpi5, with the figures `edgesim.plot.save` wrote, by name
    (monkeypatching by hand: the fixture is module-scoped)."""
    out = tmp_path_factory.mktemp("bg") / "out"
    figures, original = {}, edgesim.plot.save

    def recording(fig, path, dpi=120, **kw):  # type: ignore[no-untyped-def]
        figures[Path(path).name] = (fig, None)
        return original(fig, path, dpi, **kw)
    edgesim.plot.save = recording
    try:
        compile_model(zoo.build("digits_cnn"), "rpi5", out, calib_random=8,
                      options=CompileOptions(quiet=True, method="proxy"))
    finally:
        edgesim.plot.save = original
    return out, json.loads((out / "report.json").read_text()), figures


def test_pngs_are_valid(compiled) -> None:
    out, _, figures = compiled
    for name in ("pareto.png", "layers.png"):
        _valid_png(out / name)
        assert name in figures
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no staging left


def test_pareto_points_are_the_reports_front(compiled) -> None:
    _, report, figures = compiled
    ax = figures["pareto.png"][0].axes[0]
    drawn = np.concatenate([np.asarray(c.get_offsets()) for c in ax.collections
                            if len(c.get_offsets())])
    x = next(iter(report["front"][0]))
    front = np.array([[p[x], p["sensitivity"]] for p in report["front"]])
    # every front point is drawn, and the chosen one is marked at its front point
    for point in front:
        assert np.isclose(drawn, point, rtol=1e-12).all(axis=1).any(), point
    chosen = front[report["chosen"]]
    assert np.isclose(drawn, chosen, rtol=1e-12).all(axis=1).sum() >= 2  # point + mark
    assert report["model"] in ax.get_title() and report["method"] in ax.get_title()


def test_layer_bars_are_the_reports_layers(compiled) -> None:
    _, report, figures = compiled
    top, bottom = figures["layers.png"][0].axes[:2]
    rows = report["layers"]
    bits = _bar_heights(top)
    assert bits.tolist() == [min(r["w_bits"], 32) for r in rows]
    heights = _bar_heights(bottom)
    assert np.allclose(heights, [r["latency_ms"] for r in rows], rtol=1e-12)


def _bar_heights(ax) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Heights of the bars of `ax` (one PolyCollection; a bar per path, left to right),
    checked to stand on 0 at x = 0, 1, ..."""
    (bars,) = [c for c in ax.collections if type(c).__name__ == "PolyCollection"]
    verts = np.array([p.vertices[:4] for p in bars.get_paths()])
    assert np.allclose(verts[:, :, 0].mean(axis=1), np.arange(len(verts)))
    assert (verts[:, :, 1].min(axis=1) == 0).all()
    return verts[:, :, 1].max(axis=1)


def test_failed_compile_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match="min-fidelity"):  # a metric no plan can meet
        compile_model(zoo.build("digits_cnn"), "rpi5", out, calib_random=8,
                      options=CompileOptions(quiet=True, method="proxy", min_fidelity=0.5,
                                               fidelity_metric=lambda ref, test: 0.0))
    left = list(out.rglob("*")) if out.exists() else []
    assert not [p for p in left if p.suffix in (".png", ".onnx", ".json")]
