"""The quantiser tests' oracle: onnxruntime's QuantizeLinear -> DequantizeLinear on one tensor,
with graph optimisation off so the pair is not folded away."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SIGNED_TYPE = {4: TensorProto.INT4, 8: TensorProto.INT8}
UNSIGNED_TYPE = {4: TensorProto.UINT4, 8: TensorProto.UINT8}


def _session(nodes: list, inputs: list, outputs: list, inits: list) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 21)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the QDQ pair
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _zp_tensor(name: str, zp: np.ndarray, onnx_type: int) -> TensorProto:
    zp = np.asarray(zp)
    return helper.make_tensor(name, onnx_type, list(zp.shape), zp.ravel().astype(int).tolist())


def ort_qdq(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, onnx_type: int,
             axis: int | None = None, block_size: int | None = None) -> tuple[np.ndarray, ...]:
    """onnxruntime's QuantizeLinear codes of x and their DequantizeLinear reals."""
    attrs = {} if axis is None else {"axis": axis}
    if block_size:
        attrs["block_size"] = block_size
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs),
             helper.make_node("Cast", ["q"], ["q32"], to=TensorProto.INT32)]
    sess = _session(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape),
                     helper.make_tensor_value_info("q32", TensorProto.INT32, x.shape)],
                    [numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
                     _zp_tensor("z", zp, onnx_type)])
    y, q = sess.run(None, {"x": x.astype(np.float32)})
    return q, y
