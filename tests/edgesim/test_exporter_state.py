"""Real exporter constructs, continued (issue 16, item 0): an `If` on an input the user pins
(silero-vad's `sr == 16000`) and a recurrent state input `[2, batch, H]` whose batch axis is 1,
through the API and the CLI. The oracle is onnxruntime running the source model in float32.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import edgesim
from compiler.errors import ModelError
from compiler.frontend import load
from edgesim import calibration as cal
from edgesim.errors import UserError
from tests.edgesim.exporter_models import I64, F, checked_model, ort_outputs, weight

pytestmark = pytest.mark.ort
# this file's own generator: its draws do not depend on which other test files ran first
RNG = np.random.default_rng(16)


# --- an If on an input, and a recurrent state [2, batch, H] -----------------------------------

H = 8


def vad_like_model() -> onnx.ModelProto:
    """input [batch, 32], state [2, batch, H], sr int64 scalar -> (prob [batch, 1],
    stateN [2, batch, H]). Like silero-vad: `If(sr == 16000)` picks a branch; the state is
    mixed into the input's features and updated."""
    then_nodes = [helper.make_node("MatMul", ["input", "w16"], ["feat_t"])]
    else_nodes = [helper.make_node("MatMul", ["input", "w8"], ["feat_e"])]
    then_g = helper.make_graph(then_nodes, "then", [], [
        helper.make_tensor_value_info("feat_t", F, None)])
    else_g = helper.make_graph(else_nodes, "else", [], [
        helper.make_tensor_value_info("feat_e", F, None)])
    nodes = [
        helper.make_node("Equal", ["sr", "k16000"], ["is16"]),
        helper.make_node("If", ["is16"], ["feat"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Gather", ["state", "zero"], ["h0"], axis=0),             # [batch, H]
        helper.make_node("Gather", ["state", "one"], ["h1"], axis=0),
        helper.make_node("MatMul", ["h0", "wh"], ["rec"]),
        helper.make_node("Add", ["feat", "rec"], ["pre"]),
        helper.make_node("Add", ["pre", "h1"], ["pre2"]),
        helper.make_node("Tanh", ["pre2"], ["h"]),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["hu"]),
        helper.make_node("Concat", ["hu", "hu"], ["stateN"], axis=0),
        helper.make_node("MatMul", ["h", "wout"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    inits = {"k16000": np.array(16000, np.int64), "zero": np.array(0, np.int64),
             "one": np.array(1, np.int64), "ax0": np.array([0], np.int64),
             "w16": weight(RNG, 32, H), "w8": weight(RNG, 32, H), "wh": weight(RNG, H, H),
             "wout": weight(RNG, H, 1)}
    inputs = [helper.make_tensor_value_info("input", F, ["?", 32]),
              helper.make_tensor_value_info("state", F, [2, "?", H]),
              helper.make_tensor_value_info("sr", I64, [])]
    outputs = [helper.make_tensor_value_info("output", F, ["?", 1]),
               helper.make_tensor_value_info("stateN", F, [2, "?", H])]
    return checked_model(nodes, inputs, outputs, inits)


def _vad_data(n: int) -> dict[str, np.ndarray]:
    return {"input": RNG.standard_normal((n, 32)).astype(np.float32),
            "state": RNG.standard_normal((2, n, H)).astype(np.float32)}


def test_an_if_on_a_pinned_input_takes_the_pinned_branch() -> None:
    from compiler.executor import run

    model = vad_like_model()
    with pytest.raises(ModelError, match="If"):
        load(model)
    for sr in (16000, 8000):
        g = load(model, input_values={"sr": sr})
        assert g.inputs == ("input", "state") and any("pinned" in n for n in g.notes)
        data = _vad_data(1)
        want = ort_outputs(model, {**data, "sr": np.array(sr, np.int64)})
        got = run(g, data)
        np.testing.assert_allclose(got["output"], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["stateN"], want[1], rtol=1e-5, atol=1e-6)


def test_an_if_on_constants_is_folded_without_shape_inference(monkeypatch) -> None:
    """`sr == 16000` reads no shape: the condition needs no inference of the whole model
    (which ran once per If condition; silero has ten)."""
    import compiler.frontend.inline_if as inline_if
    from compiler.executor import run

    def refused(*args: object) -> None:
        raise AssertionError("shape inference for a condition that reads no shape")

    monkeypatch.setattr(inline_if, "known_shapes", refused)
    model, data = vad_like_model(), _vad_data(1)
    g = load(model, input_values={"sr": 8000})
    want = ort_outputs(model, {**data, "sr": np.array(8000, np.int64)})
    np.testing.assert_allclose(run(g, data)["output"], want[0], rtol=1e-5, atol=1e-6)


def test_state_batch_axis_is_detected_and_can_be_declared() -> None:
    model = vad_like_model()
    g = load(model, input_values={"sr": 16000})
    assert g.batch_axis("state") == 1 and g.batch_axis("input") == 0
    assert g.types["state"].shape == (2, 1, H)
    g3 = load(model, {"input": (3, 32), "state": (2, 3, H)}, input_values={"sr": 16000})
    assert cal.batch_size(g3) == 3 and cal.batched_shape(g3, "state", 5) == (2, 5, H)
    with pytest.raises(ModelError, match="dimension 1"):  # no batch axis: give its shape
        load(model, input_values={"sr": 16000}, batch_axes={"state": None})
    declared = load(model, {"state": (2, 1, H)}, input_values={"sr": 16000},
                    batch_axes={"state": None})
    assert declared.batch_axis("state") is None
    with pytest.raises(ModelError, match="out of range"):
        load(model, input_values={"sr": 16000}, batch_axes={"state": 3})


def test_state_calibration_feeds_samples_along_axis_1() -> None:
    g = load(vad_like_model(), input_values={"sr": 16000})
    data, _ = cal.from_arrays(g, _vad_data(5), "calib")
    assert data.count == 5 and data.samples["state"].shape == (5, 2, H)
    raw = _vad_data(5)
    data, _ = cal.from_arrays(g, raw, "calib")
    feeds = list(cal.batches(g, data))
    assert len(feeds) == 5 and feeds[2]["state"].shape == (2, 1, H)
    np.testing.assert_array_equal(feeds[2]["state"][:, 0], raw["state"][:, 2])
    with pytest.raises(UserError, match=r"expected \[2, samples, 8\]"):
        cal.from_arrays(g, {"input": raw["input"], "state": raw["state"][:, :, :4]}, "calib")
    rand = list(cal.batches(g, cal.random_samples(g, 3)))
    assert [f["state"].shape for f in rand] == [(2, 1, H)] * 3


def speech_decisions(reference: np.ndarray, test: np.ndarray) -> float:
    """A voice-activity detector's own metric: chunks whose speech decision agrees."""
    return float(np.mean((reference > 0.5) == (test > 0.5)))


@pytest.mark.parametrize("calib_random", [None, 8])
def test_state_model_compiles_with_real_and_random_data(tmp_path, calib_random) -> None:
    model = vad_like_model()
    calib = None if calib_random else _vad_data(16)
    r = edgesim.compile(model, "rpi5", outdir=tmp_path / "o", calib=calib,
                        calib_random=calib_random, method="hawq", budget="bits=8",
                        weight_bits=(4, 8), input_values={"sr": 16000},
                        fidelity_metric=speech_decisions)
    # a probability per chunk: no top-1 agreement, the user's decision metric is primary
    assert r.fidelity["output_kind"] == "tensor" and r.fidelity["top1_agreement"] is None
    assert r.fidelity["metric"] == "speech_decisions" and r.fidelity["value"] >= 0.9
    emitted = onnx.load(r.files["model"])
    assert [i.name for i in emitted.graph.input] == ["input", "state"]
    test = _vad_data(4)
    for i in range(4):
        feeds = {"input": test["input"][i:i + 1], "state": test["state"][:, i:i + 1]}
        want = ort_outputs(model, {**feeds, "sr": np.array(16000, np.int64)})
        got = ort_outputs(emitted, feeds)
        np.testing.assert_allclose(got[0], want[0], atol=0.05)


def test_cli_pins_inputs_and_declares_batch_axes(tmp_path, capsys) -> None:
    from edgesim.cli import main

    onnx.save(vad_like_model(), tmp_path / "vad.onnx")
    np.savez(tmp_path / "calib.npz", **_vad_data(8))
    base = ["compile", str(tmp_path / "vad.onnx"), "--calib", str(tmp_path / "calib.npz"),
            "--method", "uniform", "--budget", "bits=8", "--weight-bits", "8", "--quiet",
            "-o", str(tmp_path / "o")]
    assert main(base) == 2  # the If on sr cannot be decided
    assert "If" in capsys.readouterr().err
    assert main([*base, "--input-value", "sr=16000", "--batch-axis", "state=1"]) == 0
    assert "pinned to 16000" in (tmp_path / "o" / "report.md").read_text()
    assert main([*base, "--input-value", "sr=fast"]) == 2
    assert "--input-value: expected name=16000" in capsys.readouterr().err
    assert main([*base, "--input-value", "sr=16000", "--batch-axis", "state=x"]) == 2
