"""The product's calibration defaults: SmoothQuant "auto" migrates where a norm's output has
outlier channels and static 8-bit activations are among the choices, and nowhere else; its
result is the explicit alpha-0.5 migration's; "auto" activation ranges are the default."""

from __future__ import annotations

import numpy as np
import pytest

import edgesim
from compiler.passes.quantize import QuantOptions
from edgesim.errors import UserError
from edgesim.pipeline import CompileOptions
from tests.compiler.test_smooth_quant import _model

KW = dict(method="uniform", budget="bits=8", weight_bits=(8,))


def _calib() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).standard_normal((8, 12, 16)).astype(np.float32)}


def _smoothed(r) -> bool:
    return any("SmoothQuant" in n for n in r.notes)


def test_auto_smoothing_is_the_explicit_one_on_outlier_channels(tmp_path) -> None:
    model = _model()  # one draw of the random weights for all three
    auto = edgesim.compile(model, "rpi5", outdir=tmp_path / "a", calib=_calib(), **KW)
    given = edgesim.compile(model, "rpi5", outdir=tmp_path / "b", calib=_calib(),
                            smooth_quant=0.5, **KW)
    off = edgesim.compile(model, "rpi5", outdir=tmp_path / "c", calib=_calib(),
                          smooth_quant=None, **KW)
    assert _smoothed(auto) and _smoothed(given) and not _smoothed(off)
    assert auto.fidelity["sqnr_db"] == pytest.approx(given.fidelity["sqnr_db"], abs=1e-9)
    assert auto.fidelity["sqnr_db"] > off.fidelity["sqnr_db"] + 3.0  # 2x less noise at least


def test_auto_smoothing_skips_weight_only_plans_and_flat_channels(tmp_path) -> None:
    w4 = edgesim.compile(_model(), "rpi5", outdir=tmp_path / "a", calib=_calib(),
                         method="uniform", budget="bits=4", weight_bits=(4,))
    assert not _smoothed(w4)  # no 8-bit activation among the choices
    flat = _model()
    for init in flat.graph.initializer:
        if init.name == "g":  # the LayerNorm gain without its outlier channels
            init.float_data[:] = []
            init.raw_data = np.ones(16, np.float32).tobytes()
    r = edgesim.compile(flat, "rpi5", outdir=tmp_path / "b", calib=_calib(), **KW)
    assert not _smoothed(r)


def test_defaults_and_bad_values() -> None:
    assert CompileOptions().smooth_quant == "auto"
    assert QuantOptions().act_method == "auto"
    with pytest.raises(UserError, match="smooth-quant"):
        edgesim.compile(_model(), "rpi5", outdir="unused", calib=_calib(),
                        smooth_quant="sometimes", **KW)


def test_bias_correction_lowers_w4_error_on_its_data(tmp_path) -> None:
    """Over the data it is measured on, removing the mean error leaves its variance: the
    squared error falls by the squared shift, so SQNR (onnxruntime vs fp32) must rise."""
    from tests.compiler.test_bias_correction import S, _batches
    from tests.compiler.test_bias_correction import _model as linear_model

    model = linear_model(True)
    calib = {"x": _batches(1)[0]["x"]}  # one batch of S samples: all of them corrected on
    kw = dict(calib=calib, method="uniform", budget="bits=4", weight_bits=(4,))
    on = edgesim.compile(model, "rpi5", outdir=tmp_path / "on", **kw)
    off = edgesim.compile(model, "rpi5", outdir=tmp_path / "off", bias_correction=False, **kw)
    assert on.fidelity["samples"] == S
    assert on.fidelity["sqnr_db"] > off.fidelity["sqnr_db"]
