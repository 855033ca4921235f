"""What the frontend loading tests share: small ONNX models built with onnx.helper, and loading
one to compare the executor's outputs with onnxruntime running the original (uncleaned) model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import run
from compiler.frontend.load import load
from tests.compiler.opcheck import run_ort

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def model(nodes, inputs, outputs, inits=(), opset=17, ir_version=8, value_info=()):
    """A model from nodes; `inputs`/`outputs` are (name, elem_type, dims) triples."""
    vis = [helper.make_tensor_value_info(*i) for i in inputs]
    outs = [helper.make_tensor_value_info(*o) for o in outputs]
    graph = helper.make_graph(nodes, "test", vis, outs, list(inits), value_info=list(value_info))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    return m


def init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def assert_same_as_ort(source, feeds, input_shapes=None, ort_model=None):
    """Load `source` (path or proto) and compare executor outputs with onnxruntime's."""
    g = load(source, input_shapes)
    ours = run(g, feeds)
    oracle = ort_model if ort_model is not None else (
        onnx.load(source) if isinstance(source, str) else source)
    theirs = run_ort(oracle, feeds)
    names = [o.name for o in oracle.graph.output]
    assert sorted(ours) == sorted(names)
    for name, want in zip(names, theirs):
        np.testing.assert_allclose(ours[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
    return g


def x_feed(*shape):
    return {"x": RNG.standard_normal(shape).astype(np.float32)}
