"""Activation sparsification: calibrated thresholds, operand statistics, and emission checked
against onnxruntime."""

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from compiler.emit import emit
from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import load
from compiler.ops import OPS
from compiler.passes.sparsify import (
    calibrate_sequential,
    mode_center,
    sparsifiable,
    sparsify,
    threshold_for,
)
from compiler.sparsity import delta_density, operand_stats
from compiler.verify import verify
from edgesim.zoo import build, load_digits_data
from tests.compiler.emit_cases import ort_run

DATA = load_digits_data()
X = DATA["x_calib"][:100]


def _graph(name, batch=100):
    return load(build(name), {"input": (batch, 1, 8, 8)})


def _thresholded(g, feeds):
    """Per MAC layer: shares of its threshold layer's output and input equal to the centre."""
    cuts = [x for x in g.layers if x.attrs.get("fn") == "threshold"]
    env = run(g, feeds, dtype="float32", keep=True)
    return {x.name.removesuffix("/sparsify"):
            tuple(float((env[t] == np.float32(x.attrs["center"])).mean())
                  for t in (x.outputs[0], x.inputs[0])) for x in cuts}


def test_threshold_for_counts_ties_by_hand():
    v = np.array([0, 0, 0, 1, -2, 2, 3, 4, 5, 6], np.float32)
    t = threshold_for(v, 0.5, 0.0)  # |v| sorted: 0 0 0 1 2 2 3 ...: the 5th is 2, a tie
    assert 2.0 < t < 2.0001
    assert int((np.abs(v) < t).sum()) == 6  # 4 or 6 are possible: a draw takes the larger
    assert threshold_for(v, 0.45, 0.0) == 2.0  # 4 (|v| < 2) is nearer 4.5 than 6
    assert int((np.abs(v) < threshold_for(v, 0.4, 0.0)).sum()) == 4
    assert threshold_for(v, 0.0, 0.0) == 0.0
    with pytest.raises(ModelError, match="target sparsity"):
        threshold_for(v, 1.0, 0.0)


def test_mode_center_of_relu_zeros_and_of_a_shifted_bell():
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.normal(size=10_000), 0).astype(np.float32)
    assert mode_center(relu) == 0.0
    bell = rng.normal(1.5, 0.3, size=200_000).astype(np.float32)
    assert mode_center(bell) == pytest.approx(1.5, abs=0.03)


@pytest.mark.parametrize("name, level, mode", [("digits_cnn", 0.6, "magnitude"),
                                               ("digits_cnn", 0.75, "magnitude"),
                                               ("digits_transformer", 0.3, "magnitude"),
                                               ("digits_transformer", 0.5, "centred")])
def test_thresholds_reach_their_sparsity_on_calibration_data(name, level, mode):
    g = _graph(name)
    feeds = {"input": X}
    layers = [x.name for x in sparsifiable(g)]
    th = calibrate_sequential(g, [feeds], dict.fromkeys(layers, level), mode)
    gs = sparsify(g, th)
    verify(gs)
    measured = _thresholded(gs, feeds)
    assert set(measured) == set(layers)
    # a target below the zeros already there (a ReLU's, an image's background) keeps those
    assert sum(natural < level - 0.1 for _, natural in measured.values()) >= 2
    for layer, (share, natural) in measured.items():
        assert share == pytest.approx(max(level, natural), abs=0.02), layer


def test_centred_thresholds_count_the_centre_as_zero_for_the_array():
    g = _graph("digits_transformer")
    feeds = {"input": X}
    fc2 = "blocks.0.mlp.fc2/MatMul"  # reads GELU outputs, whose mode is below zero
    th = calibrate_sequential(g, [feeds], {fc2: 0.5}, "centred")
    assert th[fc2].center < 0.0
    stats = operand_stats(sparsify(g, th), [feeds], [fc2])[fc2]
    assert stats.density == pytest.approx(0.5, abs=0.02)


def test_a_single_threshold_op_equals_onnxruntime_bit_for_bit():
    g = _graph("digits_transformer", batch=8)
    layer = "blocks.0.mlp.fc1/MatMul"
    th = calibrate_sequential(g, [{"input": X[:8]}], {layer: 0.5}, "centred")
    gs = sparsify(g, th)
    cut = gs.layer(f"{layer}/sparsify")
    t, c = np.float32(cut.attrs["threshold"]), np.float32(cut.attrs["center"])
    rng = np.random.default_rng(1)
    x = rng.normal(c, 2 * t, size=(8, 8, 64)).astype(np.float32)
    x.flat[:4] = [c + t, c - t, np.nextafter(c + t, c), c]  # on and just inside the edges
    one = type(gs)(name="cut", inputs=cut.inputs, outputs=cut.outputs, layers=(cut,),
                   weights={}, types={n: gs.types[n] for n in (*cut.inputs, *cut.outputs)})
    ours = run(one, {cut.inputs[0]: x})[cut.outputs[0]]
    theirs = ort_run(emit(one), {cut.inputs[0]: x})[cut.outputs[0]]
    np.testing.assert_array_equal(ours, theirs)
    assert ours.flat[2] == c and ours.flat[0] == x.flat[0]
    ops = {n.op_type for n in emit(one).graph.node}
    assert ops == {"Sub", "Abs", "Less", "Where"}


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_emitted_masks_equal_the_executor_simulation(name):
    g = _graph(name, batch=50)
    feeds = {"input": X[:50]}
    layers = [x.name for x in sparsifiable(g)]
    gs = sparsify(g, calibrate_sequential(g, [feeds], dict.fromkeys(layers, 0.6)))
    cuts = [x for x in gs.layers if x.attrs.get("fn") == "threshold"]
    probed = {t for x in cuts for t in (x.inputs[0], x.outputs[0])} - set(gs.inputs)
    probe = dataclasses.replace(gs, outputs=gs.outputs + tuple(sorted(probed)))
    ours = run(probe, feeds, dtype="float32", keep=True)
    sess = ort.InferenceSession(emit(probe).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    theirs = {**feeds, **dict(zip(names, sess.run(names, feeds)))}
    for cut in cuts:
        # onnxruntime's mask ops on its own input are the executor's threshold, bit for bit
        (simulated,) = OPS["activation"].forward(theirs[cut.inputs[0]], **cut.attrs)
        np.testing.assert_array_equal(theirs[cut.outputs[0]], simulated)
        # the two runs agree on the masks but where upstream rounding (and earlier flips,
        # which propagate) straddles t
        flips = (ours[cut.outputs[0]] == 0) != (theirs[cut.outputs[0]] == 0)
        assert flips.mean() < 1e-2, cut.name
    agree = theirs[gs.outputs[0]].argmax(1) == ours[gs.outputs[0]].argmax(1)
    assert agree.mean() >= 0.98


def test_delta_density_by_hand():
    frames = np.array([[0.0, 1.0], [0.05, 1.0], [0.3, 0.5], [0.35, 0.45]])
    # from zeros: frame 0 sends only the 1.0; frame 1: |0.05| < 0.1 and 0 -> none;
    # frame 2: |0.3 - 0| and |0.5 - 1| -> both; frame 3: moves of 0.05 -> none
    assert delta_density(frames, 0.1) == pytest.approx(3 / 8)
    assert delta_density(frames, 0.0) == 1.0
