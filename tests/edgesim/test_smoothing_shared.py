"""SmoothQuant's "auto" decision in the float session HAWQ's forward passes use anyway: where
no norm output has outlier channels it costs no session of its own (the same sessions as a
compile without SmoothQuant, the same emitted graph), and where one has, the migration is
the explicit alpha-0.5 one (maxima from the site-only session, as before the sharing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest

import edgesim
import edgesim.float_pass
import edgesim.quantize  # noqa: F401  (binds the unwrapped onnxruntime_env: not counted)
from tests.compiler.test_smooth_quant import _model

# no time bounds: the range search then tries the same ranges whatever the load
KW = dict(method="hawq", budget="bits=8", weight_bits=(8,), plots="inline",
          analysis_budget_s=None)


def _calib() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).standard_normal((8, 12, 16)).astype(np.float32)}


def _flat() -> onnx.ModelProto:
    """`_model` with the LayerNorm gain all ones: no outlier channel (max/median ~1.3)."""
    model = _model()
    for init in model.graph.initializer:
        if init.name == "g":
            init.float_data[:] = []
            init.raw_data = np.ones(16, np.float32).tobytes()
    return model


def _compiled(model: onnx.ModelProto, out: Any, monkeypatch: pytest.MonkeyPatch,
              **kw: Any) -> tuple[Any, onnx.GraphProto, int]:
    """The result, the emitted graph, and how many float onnxruntime sessions of the whole
    model (`onnxruntime_env`) the compile built before quantising."""
    built = []
    env = edgesim.float_pass.onnxruntime_env

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return env(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(edgesim.float_pass, "onnxruntime_env", counted)
        r = edgesim.compile(model, "rpi5", outdir=out, calib=_calib(), **KW, **kw)
    graph = onnx.load(str(next(out.glob("model.*.onnx")))).graph
    return r, graph, len(built)


def _smoothed(r: Any) -> bool:
    return any("SmoothQuant" in n for n in r.notes)


def test_no_site_costs_no_session_and_changes_nothing(tmp_path, monkeypatch) -> None:
    model = _flat()
    auto, g_auto, n_auto = _compiled(model, tmp_path / "a", monkeypatch)
    off, g_off, n_off = _compiled(model, tmp_path / "b", monkeypatch, smooth_quant=None)
    assert not _smoothed(auto)
    assert n_auto == n_off  # before: one more, for the sites' 8 float passes
    assert g_auto == g_off


def test_outlier_site_migrates_as_the_explicit_alpha(tmp_path, monkeypatch) -> None:
    model = _model()  # one draw of the random weights for both
    auto, g_auto, _ = _compiled(model, tmp_path / "a", monkeypatch)
    given, g_given, _ = _compiled(model, tmp_path / "b", monkeypatch, smooth_quant=0.5)
    assert _smoothed(auto) and _smoothed(given)
    assert g_auto == g_given  # the same scales, to the bit
