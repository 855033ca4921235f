"""The compile's fidelity check runs the emitted model several batches at a time only where
that gives what batch-by-batch runs give (`fidelity.emitted_output`)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.frontend import load
from edgesim import calibration as cal
from edgesim import zoo
from edgesim.evaluate import run_batches, session
from edgesim.fidelity import FIDELITY_CHUNK, emitted_output


@pytest.fixture(scope="module")
def digits() -> tuple:
    model = zoo.build("digits_cnn")  # symbolic batch "N", graph batch size 1
    data = cal.CalibrationData({"input": zoo.load_digits_data()["x_calib"][:70]}, "test")
    return model, load(model), data


def _one_by_one(model, g, data) -> np.ndarray:
    """The independent oracle: onnxruntime on each batch of the graph's size, as before."""
    return np.concatenate([o["logits"] for o in run_batches(model, cal.batches(g, data))])


@pytest.mark.ort
def test_a_symbolic_batch_runs_in_chunks_with_the_same_outputs(digits) -> None:
    model, g, data = digits
    sess, sizes = session(model), []

    def run(feeds):
        sizes.append(len(feeds["input"]))
        return sess.run(["logits"], dict(feeds))[0]

    got = emitted_output(g, data, run)
    assert sizes == [1, FIDELITY_CHUNK, FIDELITY_CHUNK, 70 - 2 * FIDELITY_CHUNK]
    np.testing.assert_allclose(got, _one_by_one(model, g, data), rtol=1e-5, atol=1e-6)


@pytest.mark.ort
def test_a_model_that_rejects_larger_batches_runs_batch_by_batch(digits) -> None:
    model, g, data = digits
    sess = session(model)

    def fixed(feeds):
        if len(feeds["input"]) != 1:
            raise RuntimeError("fixed batch of 1")  # as onnxruntime does on a static shape
        return sess.run(["logits"], dict(feeds))[0]

    got = emitted_output(g, data, fixed)
    np.testing.assert_array_equal(got, _one_by_one(model, g, data))


def test_outputs_that_mix_the_batch_run_batch_by_batch(digits) -> None:
    _, g, data = digits
    # an output normalised over its batch: chunks would change every sample's value
    mixing = lambda feeds: feeds["input"].reshape(len(feeds["input"]), -1) - feeds["input"].mean()  # noqa: E731
    got = emitted_output(g, data, mixing)
    x = data.samples["input"].reshape(70, -1)
    np.testing.assert_allclose(got, x - x.mean(axis=1, keepdims=True), rtol=1e-6, atol=1e-6)


def test_fewer_samples_than_two_batches_run_batch_by_batch(digits) -> None:
    _, g, data = digits
    one = cal.CalibrationData({"input": data.samples["input"][:1]}, "test")
    got = emitted_output(g, one, lambda feeds: feeds["input"][:, 0, 0, :2] * 2.0)
    np.testing.assert_array_equal(got, data.samples["input"][:1, 0, 0, :2] * 2.0)
