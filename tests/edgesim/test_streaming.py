"""Delta-gated streams: the emitted stateful model in onnxruntime against the executor and
against the delta rule computed directly on the frames."""

import numpy as np
import pytest

from compiler.emit import emit
from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.sparsify import delta_gates, sparsifiable
from compiler.sparsity import delta_density
from edgesim.streaming import ort_forward, run_stream
from edgesim.zoo import build, load_digits_data

DATA = load_digits_data()


def _frames(count=8):
    a, b = DATA["x_test"][0], DATA["x_test"][1]
    return np.stack([(1 - t) * a + t * b for t in np.linspace(0, 1, count)]).astype(
        np.float32)[:, None]


def test_stream_in_onnxruntime_equals_the_executor_and_the_delta_rule():
    g = load(build("digits_cnn"))
    layers = tuple(x.name for x in sparsifiable(g))
    t = {n: 0.05 for n in layers}
    gd = delta_gates(g, t)
    frames = _frames()
    theirs = run_stream(gd, ort_forward(emit(gd)), frames, layers)
    ours = run_stream(gd, lambda feeds: run(gd, feeds, dtype="float32"), frames, layers)
    np.testing.assert_allclose(theirs.outputs, ours.outputs, atol=1e-3)
    for n in layers:  # masks may differ only where rounding straddles t
        assert theirs.changed[n] == pytest.approx(ours.changed[n], abs=0.01)
    # conv1 reads the frames themselves: its share sent is the delta rule on the pixels
    assert theirs.changed["conv1/Conv"] == pytest.approx(delta_density(frames, 0.05), abs=1e-9)
    assert theirs.changed["conv1/Conv"] < delta_density(frames, 0.0)


def test_zero_threshold_reproduces_the_dense_model():
    g = load(build("digits_cnn"))
    layers = tuple(x.name for x in sparsifiable(g))
    gd = delta_gates(g, dict.fromkeys(layers, 0.0))
    frames = _frames(4)
    got = run_stream(gd, lambda feeds: run(gd, feeds, dtype="float32"), frames, layers)
    dense = np.stack([run(g, {"input": f}, dtype="float32")["logits"] for f in frames])
    np.testing.assert_allclose(got.outputs, dense, rtol=1e-5, atol=1e-5)


def test_delta_gates_reject_a_layer_without_weights():
    g = load(build("digits_cnn"))
    with pytest.raises(ModelError, match="bn1/Relu"):
        delta_gates(g, {"bn1/Relu": 0.1})
