"""The range search's held-out samples run as one onnxruntime batch when the model allows it,
scoring range assignments as the per-sample runs do; a model with a fixed batch inside falls
back to per-sample runs."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from compiler.passes.quantize import QuantOptions, quantize
from compiler.range_search import output_error, reference_cases
from edgesim import assignment
from edgesim import calibration as cal
from edgesim.float_pass import float_pass
from edgesim.loading import load_graph
from edgesim.ranges import _held_batches, _onnxruntime_runner

F = TensorProto.FLOAT


def test_one_batch_scores_as_the_per_sample_runs():
    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 16, seed=3)
    batches = _held_batches(g, data)
    assert len(batches) == 1 and batches[0]["input"].shape[0] == 16
    qg = quantize(g, assignment.resolve(g, 8), float_pass(g, data, stats=True).stats,
                  QuantOptions())
    one = output_error(qg, reference_cases(g, batches, _onnxruntime_runner),
                       _onnxruntime_runner)
    per = output_error(qg, reference_cases(g, cal.batches(g, data), _onnxruntime_runner),
                       _onnxruntime_runner)
    assert per > 0  # W8A8 changes the outputs: the comparison is not between zeros
    np.testing.assert_allclose(one, per, rtol=1e-4)


def _fixed_batch_model(last: str):
    """x [N, 4] @ w, then a Reshape to [3] (the emitted shape is static: onnxruntime fails
    at batch 5) or a sum over the samples (runs, but mixes them)."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    tail = (helper.make_node("Reshape", ["h", "s"], ["y"]) if last == "reshape" else
            helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1))
    out = [3] if last == "reshape" else [1, 3]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), tail], "g",
        [helper.make_tensor_value_info("x", F, ["N", 4])],
        [helper.make_tensor_value_info("y", F, out)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([-1]), "s"),
         numpy_helper.from_array(np.array([0]), "axes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_batch_fixed_or_mixed_inside_the_model_runs_per_sample():
    for last in ("reshape", "sum"):
        g = load_graph(_fixed_batch_model(last))
        data = cal.random_samples(g, 5)
        batches = _held_batches(g, data)
        assert [b["x"].shape for b in batches] == [(1, 4)] * 5, last
