"""Calibration: which tensors are collected, exact merging across batches, and the ranges."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.calibrate import CalibrationStats, calibrate, calibration_tensors


def _conv_relu_gemm(batch: int = 4) -> onnx.ModelProto:
    """conv -> relu -> global pool -> flatten -> gemm -> sigmoid."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "w": rng.standard_normal((4, 3, 3, 3)), "b": rng.standard_normal(4),
        "wf": rng.standard_normal((5, 4)), "bf": rng.standard_normal(5)}.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc"),
        helper.make_node("Sigmoid", ["y"], ["out"], name="sig"),
    ]
    graph = helper.make_graph(
        nodes, "crg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_calibration_tensors() -> None:
    g = load(_conv_relu_gemm())
    # MAC inputs and outputs, the ReLU reading the conv; not weights, not the sigmoid output
    assert set(calibration_tensors(g)) == {"x", "c", "r", "f", "y"}


def test_ranges_are_the_data_ranges() -> None:
    g = load(_conv_relu_gemm())
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((4, 3, 6, 6)).astype(np.float32)} for _ in range(3)]
    stats = calibrate(g, batches, source="test")
    envs = [run(g, b, keep=calibration_tensors(g)) for b in batches]
    for t, s in stats.stats.items():
        allv = np.concatenate([e[t].ravel() for e in envs])
        assert (s.min, s.max, s.count) == (float(allv.min()), float(allv.max()), allv.size)
    assert stats.samples == 12 and stats.source == "test"
    assert stats.stats["r"].min == 0.0  # the ReLU output


ONE = load(_conv_relu_gemm(1))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_batches_merge_exactly(cut: int, seed: int) -> None:
    """Statistics of two parts merged (in either order) equal one pass over all the data."""
    g = ONE
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((6, 3, 6, 6)) * rng.uniform(0.1, 10)).astype(np.float32)
    parts = [{"x": x[i:i + 1]} for i in range(6)]
    whole = calibrate(g, parts)
    merged = calibrate(g, parts[cut:]).merge(calibrate(g, parts[:cut]))
    for t in whole.stats:
        a, b = whole.stats[t], merged.stats[t]
        assert (a.count, a.min, a.max, a.half_range) == (b.count, b.min, b.max, b.half_range)
        np.testing.assert_array_equal(a.hist, b.hist)


def test_minmax_params_closed_form() -> None:
    g = load(_conv_relu_gemm())
    x = np.random.default_rng(2).standard_normal((4, 3, 6, 6)).astype(np.float32)
    stats = calibrate(g, [{"x": x}])
    p = stats.params("c", 8, "minmax")
    lo, hi = min(stats.stats["c"].min, 0.0), max(stats.stats["c"].max, 0.0)
    assert p.scale == np.float32((hi - lo) / 255)  # uint8 asymmetric, range stretched to 0
    assert p.zero_point == int(np.rint(-lo / ((hi - lo) / 255)))
    relu = stats.params("r", 8, "minmax")
    assert relu.zero_point == 0  # a ReLU range starts at 0


def test_percentile_clips_outliers() -> None:
    g = load(_conv_relu_gemm(1))
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 6)).astype(np.float32)
    x[0, 0, 0, 0] = 1000.0  # one outlier among 108 inputs
    stats = calibrate(g, [{"x": x}])
    assert stats.params("x", 8, "percentile", 99.0).scale < stats.params("x", 8, "minmax").scale


def test_errors() -> None:
    g = load(_conv_relu_gemm())
    with pytest.raises(ModelError, match="no calibration batches"):
        calibrate(g, [])
    bad = np.zeros((4, 3, 6, 6), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ModelError, match="tensor x"):
        calibrate(g, [{"x": bad}])
    with pytest.raises(ModelError, match="tensor nope"):
        CalibrationStats().params("nope")


def test_a_given_forward_replaces_the_executor() -> None:
    """`forward` computes the batches (e.g. onnxruntime); it is asked for exactly the tensors
    collected, and its results are what the statistics describe."""
    g = load(_conv_relu_gemm())
    x = np.random.default_rng(4).standard_normal((4, 3, 6, 6)).astype(np.float32)
    asked = []

    def doubled(feeds, names):
        asked.append(names)
        return {t: 2 * v for t, v in run(g, feeds, keep=names).items()}

    plain = calibrate(g, [{"x": x}])
    stats = calibrate(g, [{"x": x}], forward=doubled)
    assert asked == [calibration_tensors(g)]
    for t, s in stats.stats.items():
        ref = plain.stats[t]
        assert (s.min, s.max, s.half_range, s.count) == (2 * ref.min, 2 * ref.max,
                                                         2 * ref.half_range, ref.count)
        np.testing.assert_array_equal(s.hist, ref.hist)  # scaling by 2 keeps every bin
