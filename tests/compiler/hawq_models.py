"""Small ONNX models the HAWQ tests share, with closed forms (`two_block_least_squares`) or
small enough for brute-force Hessians (`mlp`)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load


def model(nodes: list, inputs: dict[str, list[int]], output: tuple[str, list[int]],
           weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s)
                     for k, s in inputs.items()],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def two_block_least_squares(n: int = 32, seed: int = 0, batch: int | None = None):
    """y = x1 @ W1 + x2 @ W2 (two linear layers), MSE to targets t.

    L = (1/N) sum_n ||y_n - t_n||^2 and y_no = sum_i x1_ni w1_oi + sum_j x2_nj w2_oj, so
    d2L / dw1_oi dw1_o'i' = (2/N) sum_n x1_ni x1_ni' [o == o'], whose trace over the block
    [out, in] is out * 2 * sum(x1^2) / N; cross blocks are (2/N) X1^T X2 per output.
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal((n, 5)), rng.standard_normal((n, 3)) * 3.0
    weights = {"w1": rng.standard_normal((5, 2)), "w2": rng.standard_normal((3, 2))}
    nodes = [helper.make_node("MatMul", ["x1", "w1"], ["y1"], name="mm1"),
             helper.make_node("MatMul", ["x2", "w2"], ["y2"], name="mm2"),
             helper.make_node("Add", ["y1", "y2"], ["y"], name="add")]
    b = n if batch is None else batch  # the graph's static batch; the data may be k batches
    g = load(model(nodes, {"x1": [b, 5], "x2": [b, 3]}, ("y", [b, 2]), weights))
    feeds = {"x1": x1.astype(np.float32), "x2": x2.astype(np.float32)}
    targets = rng.standard_normal((n, 2))
    return g, feeds, targets


def mlp(act: str, n: int = 16, seed: int = 1):
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.standard_normal((4, 5)) * 0.8, "w2": rng.standard_normal((5, 3)) * 0.8}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node(act, ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    g = load(model(nodes, {"x": [n, 4]}, ("y", [n, 3]), weights))
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return g, x, rng.integers(0, 3, n)
