"""Compile options measured on small exporter-style models: SmoothQuant and GPTQ rounding raise
the emitted model's SQNR, and the extreme-layer-error flag reports the error onnxruntime
measures (and not a W8A8 conv's clipped negatives before a ReLU)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import edgesim
from edgesim.errors import UserError
from tests.edgesim.exporter_models import F, checked_model, ort_outputs, weight

pytestmark = pytest.mark.ort
# this file's own generator: its draws do not depend on which other test files ran first
RNG = np.random.default_rng(16)


def test_smooth_quant_raises_w8a8_fidelity_on_outlier_channels(tmp_path) -> None:
    from tests.compiler.test_smooth_quant import _model

    calib = {"x": RNG.standard_normal((16, 12, 16)).astype(np.float32)}
    kw = dict(calib=calib, method="uniform", budget="bits=8", weight_bits=(8,),
              calib_method="minmax")
    plain = edgesim.compile(_model(), "rpi5", outdir=tmp_path / "a", smooth_quant=None, **kw)
    smooth = edgesim.compile(_model(), "rpi5", outdir=tmp_path / "b", smooth_quant=0.5, **kw)
    assert any("SmoothQuant" in n for n in smooth.notes)
    assert smooth.fidelity["sqnr_db"] > plain.fidelity["sqnr_db"] + 3.0  # at least 2x less noise
    with pytest.raises(UserError, match="alpha"):
        edgesim.compile(_model(), "rpi5", outdir=tmp_path / "c", smooth_quant=1.5, **kw)


def _mlp_model(k: int = 64) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("MatMul", ["hr", "w2"], ["y"])]
    inits = {"w1": weight(RNG, k, k), "w2": weight(RNG, k, 16)}
    return checked_model(nodes, [helper.make_tensor_value_info("x", F, ["n", k])],
                  [helper.make_tensor_value_info("y", F, ["n", 16])], inits)


@pytest.mark.parametrize("weight_bits,budget", [(4, "bits=4")])
def test_gptq_rounding_beats_nearest_on_held_out_data(tmp_path, weight_bits: int,
                                                      budget: str) -> None:
    """W4 weight-only (MatMulNBits), one model for both roundings: GPTQ was +0.5 to +2.9 dB
    SQNR over RTN (median +1.7) on 32 draws of the model and data, 5 of them under the 1 dB
    once asserted (which passed on lucky draws: the test drew a fresh model per rounding)."""
    mix = RNG.standard_normal((64, 64)) + 2.0 * np.eye(64)

    def data(n: int) -> dict[str, np.ndarray]:
        return {"x": (RNG.standard_normal((n, 64)) @ mix).astype(np.float32)}

    calib, held_out = data(128), data(64)
    model = _mlp_model()
    sqnr = {}
    for rounding in ("rtn", "gptq"):
        r = edgesim.compile(model, "rpi5", outdir=tmp_path / rounding, calib=calib,
                            eval_data=held_out, method="uniform", budget=budget,
                            weight_bits=(weight_bits,), rounding=rounding,
                            bias_correction=False)  # the rounding alone
        sqnr[rounding] = r.fidelity["sqnr_db"]
    assert sqnr["gptq"] > sqnr["rtn"], sqnr


def test_extreme_layer_errors_are_flagged_with_their_measured_sqnr(tmp_path) -> None:
    calib = {"x": RNG.standard_normal((8, 64)).astype(np.float32)}
    model = _mlp_model()
    flagged = {}
    for bits in (2, 8):
        r = edgesim.compile(model, "rpi5", outdir=tmp_path / str(bits), calib=calib,
                            method="uniform", budget=f"bits={bits}", weight_bits=(bits,))
        flagged[bits] = [n for n in r.notes if "extreme error" in n]
    assert flagged[8] == [] and any(n.startswith("layer MatMul_0:") for n in flagged[2])
    # the first layer reads the model input, so its own error is the emitted model's error
    # on h: measure it in onnxruntime
    emitted = onnx.load(tmp_path / "2" / "model.rpi5.onnx")
    emitted.graph.output.append(helper.make_tensor_value_info("h", F, None))
    source = checked_model([helper.make_node("MatMul", ["x", "w1"], ["h"])],
                    [helper.make_tensor_value_info("x", F, ["n", 64])],
                    [helper.make_tensor_value_info("h", F, ["n", 64])],
                    {"w1": numpy_helper.to_array(
                        next(t for t in model.graph.initializer if t.name == "w1"))})
    ref = np.concatenate([ort_outputs(source, {"x": calib["x"][i:i + 1]})[0] for i in range(2)])
    sess = ort.InferenceSession(emitted.SerializeToString(), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(["h"], {"x": calib["x"][i:i + 1]})[0] for i in range(2)])
    db = 10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2))
    note = next(n for n in flagged[2] if n.startswith("layer MatMul_0:"))
    assert f"{db:.1f} dB" in note, (db, note)


def test_a_w8a8_conv_before_a_relu_is_not_flagged(tmp_path) -> None:
    """digits_cnn's conv3 at W8A8: its output grid is the ReLU's (zero point 0), so its
    negative outputs are not its error. The flag compared them with the pre-ReLU float output
    (5.6 dB); the emitted model's own SQNR on the same plan is above 30 dB."""
    from edgesim import zoo
    from edgesim.api import quantize

    x = zoo.load_digits_data()["x_calib"][:16]
    np.savez(tmp_path / "calib.npz", input=x)
    r = quantize(zoo.build("digits_cnn"), {"conv3/Conv": [8, 8]}, tmp_path / "q.onnx",
                 calib=tmp_path / "calib.npz")
    assert not [n for n in r.notes if "extreme error" in n], r.notes
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    ref = ort_outputs(zoo.build("digits_cnn"), {"input": x})[0]
    got = sess.run(None, {"input": x})[0]
    assert 10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()) > 30
