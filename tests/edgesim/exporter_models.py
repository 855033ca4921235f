"""What the exporter-construct tests share: a checked opset-17 model from nodes, running one in
onnxruntime (the oracle), and random weights scaled by fan-in."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def checked_model(nodes: list, inputs: list, outputs: list, inits: dict) -> onnx.ModelProto:
    """An opset-17 model of `nodes` (value-info `inputs`/`outputs`, `inits` as initializers),
    passed through onnx.checker."""
    graph = helper.make_graph(nodes, "m", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_outputs(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """The model's outputs from onnxruntime's CPU provider, in graph order."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def weight(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """A float32 normal weight of `shape` from `rng`, scaled by 1/sqrt(fan-in = shape[0])."""
    return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
