"""edgesim.evaluate: onnxruntime runs and agreement metrics against closed forms."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgesim.errors import UserError
from edgesim.evaluate import (
    accuracy,
    agreement,
    cosine,
    measure_latency,
    run_onnx,
    sqnr_db,
    top1_agreement,
)

pytestmark = pytest.mark.ort


def _add_model():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_run_onnx_and_latency(tmp_path) -> None:
    a, b = np.ones((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(run_onnx(_add_model(), {"a": a, "b": b})["y"], a + b)
    path = tmp_path / "add.onnx"
    path.write_bytes(_add_model().SerializeToString())
    np.testing.assert_array_equal(run_onnx(path, {"a": a, "b": b}, threads=1)["y"], a + b)
    lat = measure_latency(path, {"a": a, "b": b}, threads=2, runs=5)
    assert lat.runs == 5 and lat.threads == 2 and 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms


def test_unloadable_model(tmp_path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.onnx.*onnxruntime cannot load"):
        run_onnx(path, {})


@pytest.mark.parametrize("data, message", [
    ({"a": np.ones((2, 3)), "c": np.ones((2, 3))},
     r"--data: keys must be the model inputs \['a', 'b'\]: missing \['b'\], unknown \['c'\]"),
    ({"a": np.ones((2, 4)), "b": np.ones((2, 4))}, r"--data: a: shape \[2, 4\], the model takes"),
    ({"a": np.ones((1, 3)), "b": np.ones((1, 3))}, "1 samples, fewer than the model's static"),
])
def test_evaluate_refuses_data_that_is_not_the_models_inputs(tmp_path, capsys, data,
                                                             message) -> None:
    """`edgesim evaluate --data` with other keys or shapes than the model's inputs exits 2
    with one line naming them (it was an internal error, exit 1: onnxruntime's ValueError)."""
    from edgesim.cli import main

    path, npz = tmp_path / "add.onnx", tmp_path / "data.npz"
    path.write_bytes(_add_model().SerializeToString())
    np.savez(npz, **{k: v.astype(np.float32) for k, v in data.items()})
    assert main(["evaluate", str(path), "--data", str(npz), "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(message, err[0])


def test_metrics_closed_form() -> None:
    ref = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert cosine(ref, ref) == pytest.approx(1.0)
    assert cosine(ref[:1], np.array([[0.0, 2.0]])) == pytest.approx(0.0)  # orthogonal
    assert cosine(ref, -ref) == pytest.approx(-1.0)
    # signal 1 + 1 + 1 = 3; noise 0.1^2 * 3 = 0.03 -> 10 log10(100) = 20 dB
    assert sqnr_db(ref, ref + np.array([[0.1, 0.0], [0.1, -0.1]])) == pytest.approx(20.0)
    assert math.isinf(sqnr_db(ref, ref))
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1_agreement(logits, logits[:, ::-1]) == 0.0
    assert accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    a = agreement(logits, logits, np.array([1, 0, 1]))
    assert (a.cosine, a.top1_agreement, a.max_abs_diff, a.accuracy) == (
        pytest.approx(1.0), 1.0, 0.0, 1.0)
    with pytest.raises(UserError, match="labels"):
        accuracy(logits, np.array([1]))


# --- metrics that fit the output ---


def test_output_kind_picks_agreement_only_for_class_scores() -> None:
    from edgesim.evaluate import output_kind

    logits = np.zeros((4, 10), np.float32)
    assert output_kind(np.zeros(4, np.int64)) == "labels"
    assert output_kind(logits, "linear") == "class_scores"
    assert output_kind(logits, "softmax") == "class_scores"
    assert output_kind(logits, "eltwise") == "tensor"       # e.g. a normalised embedding
    assert output_kind(logits, "eltwise", labelled=True) == "class_scores"
    assert output_kind(np.zeros((4, 1), np.float32), "activation") == "tensor"  # a probability
    assert output_kind(np.zeros((4, 7, 384), np.float32), "linear") == "tensor"  # a sequence


def test_fidelity_metrics_by_kind() -> None:
    from edgesim.evaluate import fidelity_metrics

    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    test = np.array([[1.0, 0.1], [1.0, 1.0]])
    emb = fidelity_metrics(ref, test, "tensor")
    # cosines by hand: row 0: 1 / sqrt(1.01); row 1: 2 / (2 sqrt 2)
    assert emb["metric"] == "cosine" and emb["top1_agreement"] is None
    assert emb["value"] == pytest.approx((1 / np.sqrt(1.01) + 1 / np.sqrt(2)) / 2)
    scores = fidelity_metrics(ref, test, "class_scores", labels=np.array([0, 0]))
    # argmax: ref (0, 1), test (0, 0 on the tie at index 0)
    assert (scores["metric"], scores["value"], scores["accuracy"]) == ("top1_agreement", 0.5, 1.0)
    labels = fidelity_metrics(np.array([3, 1, 4]), np.array([3, 1, 5]), "labels")
    assert labels["value"] == pytest.approx(2 / 3) and labels["cosine"] is None


def test_user_metric_replaces_the_primary_one() -> None:
    from edgesim.evaluate import fidelity_metrics

    def decisions(ref: np.ndarray, test: np.ndarray) -> float:
        return float(np.mean((ref > 0.5) == (test > 0.5)))

    out = fidelity_metrics(np.array([[0.9], [0.2]]), np.array([[0.4], [0.1]]), "tensor",
                           metric=decisions)
    assert (out["metric"], out["value"]) == ("decisions", 0.5)
    assert out["cosine"] is not None  # the fitting metrics are still reported
