"""`simulate` counts a table stored once and read by two GatherBlockQuantized nodes (a model
with two token inputs on one embedding) once. The read-back kept a dequantised copy per node,
so the two-reader file counted the table twice.

Oracle: the two-reader file stores exactly the one-reader file's initializers (checked here),
so its weight bytes are the one-reader file's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesim import api

MS = "com.microsoft"
V, D, BLOCK = 64, 32, 16


def _init_bytes(model: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


def _gather_model(readers: int) -> onnx.ModelProto:
    """`readers` int64 id inputs, each gathered from one 8-bit block-quantised [V, D] table."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.integers(0, 256, (V, D)).astype(np.uint8), "table"),
             numpy_helper.from_array(rng.uniform(0.01, 0.02, (V, D // BLOCK))
                                     .astype(np.float32), "scales")]
    nodes = [helper.make_node("GatherBlockQuantized", ["table", f"ids{i}", "scales"],
                              [f"emb{i}"], f"embed{i}", domain=MS, bits=8, block_size=BLOCK)
             for i in range(readers)]
    graph = helper.make_graph(
        nodes, "gbq", [helper.make_tensor_value_info(f"ids{i}", TensorProto.INT64, [1, 4])
                       for i in range(readers)],
        [helper.make_tensor_value_info(f"emb{i}", TensorProto.FLOAT, [1, 4, D])
         for i in range(readers)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(MS, 1)])


def _weight_bytes(tmp_path) -> list[float]:
    totals, stored = [], []
    for readers in (1, 2):
        model = _gather_model(readers)
        onnx.checker.check_model(model)
        path = tmp_path / f"m{readers}.onnx"
        onnx.save(model, path)
        stored.append(_init_bytes(model))
        totals.append(api.simulate(str(path), "rpi5").total.weight_bytes)
    assert stored[0] == stored[1]  # the oracle: the same initializers either way
    return totals


def test_two_gather_block_quantized_on_one_table_count_it_once(tmp_path) -> None:
    one, two = _weight_bytes(tmp_path)
    assert one > 0 and two == one

