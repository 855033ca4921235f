"""The range search's reference outputs taken from the float pass that gave the statistics
(`FloatPass.held_outputs`) instead of a float session of their own: the same chunks and
the same values as running the float model on them (`run_chunks`)."""

from __future__ import annotations

import numpy as np

from edgesim import calibration as cal
from edgesim.chunks import recorded_chunks
from edgesim.float_pass import (
    E2E_SAMPLES,
    FloatPassRecorder,
    fit_batches,
    float_pass,
    onnxruntime_env,
)
from edgesim.loading import load_graph
from edgesim.ranges import _held_runs


def _setup():  # type: ignore[no-untyped-def]
    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 24, seed=3)
    return g, data, cal.split(data, E2E_SAMPLES)[1]


def _same_runs(got, want) -> None:  # type: ignore[no-untyped-def]
    assert len(got) == len(want)
    for (f1, y1), (f2, y2) in zip(got, want):
        assert f1.keys() == f2.keys() and all(np.array_equal(f1[k], f2[k]) for k in f1)
        for t in y1:
            np.testing.assert_allclose(y1[t], y2[t], rtol=1e-5, atol=1e-6)


def test_recorded_chunks_equal_the_float_models_runs() -> None:
    g, data, held = _setup()
    fp = float_pass(g, data, stats=True)
    assert fp.held_outputs is not None and len(fp.held_outputs) == held.count
    for chunk in (None, 2, 1):
        want = [(f, {t: y[t] for t in g.outputs}) for f, y in _held_runs(g, held, chunk)]
        _same_runs(_held_runs(g, held, chunk, fp.held_outputs), want)
    assert len(_held_runs(g, held, 2, fp.held_outputs)) == -(-held.count // 2)


def test_a_model_that_refuses_chunks_gets_one_case_per_sample() -> None:
    g, data, held = _setup()
    outputs = float_pass(g, data, stats=True).held_outputs
    assert outputs is not None

    def refuses(feeds):  # type: ignore[no-untyped-def]
        raise RuntimeError("fixed batch")
    got = recorded_chunks(g, held, outputs, refuses, 2)
    per = list(cal.batches(g, held))
    assert len(got) == len(per) == held.count
    _same_runs(got, list(zip(per, outputs)))


def test_the_hawq_recorder_keeps_the_same_held_outputs_as_a_float_pass() -> None:
    g, data, _ = _setup()
    env = onnxruntime_env(g)
    assert env is not None
    recorder = FloatPassRecorder(g, fit=fit_batches(g, data))
    for feeds in cal.batches(g, data):
        recorder(env(feeds))
    got, want = recorder.result(data), float_pass(g, data, stats=True)
    assert got is not None and got.held_outputs is not None and want.held_outputs is not None
    assert len(got.held_outputs) == len(want.held_outputs) > 0
    for a, b in zip(got.held_outputs, want.held_outputs):
        for t in b:
            np.testing.assert_allclose(a[t], b[t], rtol=1e-5, atol=1e-6)


def test_recorded_outputs_are_joined_only_where_every_probed_batch_matches() -> None:
    # a run whose later samples move with the batch (a floor at the batch's max, as
    # openWakeWord's melspectrogram) while the first, the loudest, does not
    g, data, held = _setup()
    x = held.samples["input"].copy()
    x[0] *= 4.0
    loud = cal.CalibrationData({"input": x}, "test")
    per = list(cal.batches(g, loud))

    def floor(feeds):  # type: ignore[no-untyped-def]
        flat = feeds["input"].reshape(len(feeds["input"]), -1)
        return {"y": np.maximum(flat, flat.max() - 1.0)}
    outputs = [floor(f) for f in per]  # the oracle: one batch at a time
    assert not np.allclose(floor(loud.samples)["y"][1], outputs[1]["y"][0])
    _same_runs(recorded_chunks(g, loud, outputs, floor, 2), list(zip(per, outputs)))
