"""Fuzz families for ONNX models: byte mutations of valid model files (the zoo's digits CNN,
a small MLP) and protobuf mutations (dims, initializers, nodes), each fed to `load` and
`simulate` (see tests/fuzz/families.py for the contract)."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.fuzz.runner import Call

HUGE = (2**31 - 1, 2**40, 2**62, 2**63 - 1)


# ---- ONNX models ----

@cache
def _seed_models() -> tuple[bytes, ...]:
    from edgesim import zoo

    return (zoo.build("digits_cnn").SerializeToString(), _mlp().SerializeToString())


def _mlp() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _load_and_simulate(path: Path) -> Call:
    def call() -> object:
        from edgesim import api

        return api.simulate(str(path), "rpi5", bits=8)
    return call


def onnx_bytes(rng: random.Random, work: Path) -> Call:
    """Byte-level mutations of a valid model: flips, truncation, insertions, splices."""
    data = bytearray(rng.choice(_seed_models()))
    for _ in range(rng.randint(1, 8)):
        op, i = rng.randrange(4), rng.randrange(len(data) + 1)
        if op == 0 and i < len(data):
            data[i] = rng.randrange(256)
        elif op == 1:
            del data[i:i + rng.randint(1, 64)]
        elif op == 2:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            data = data[:i]
    path = work / "m.onnx"
    path.write_bytes(bytes(data))
    return _load_and_simulate(path)


def _mutate_dims(m: onnx.ModelProto, rng: random.Random) -> None:
    vis = list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info)
    vi = rng.choice(vis)
    dims = vi.type.tensor_type.shape.dim
    if dims:
        d = rng.choice(dims)
        choice = rng.choice([0, -1, -7, *HUGE, "sym", "clear"])
        if choice == "sym":
            d.dim_param = rng.choice(["N", "", "?", "x" * 300])
        elif choice == "clear":
            del dims[rng.randrange(len(dims))]
        else:
            d.dim_value = choice


def _mutate_init(m: onnx.ModelProto, rng: random.Random) -> None:
    if not m.graph.initializer:
        return
    t = rng.choice(m.graph.initializer)
    op = rng.randrange(5)
    if op == 0:
        t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 3, *HUGE]) if t.dims else 0
    elif op == 1:
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data) + 1)]
    elif op == 2:
        t.data_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 22, 40])
    elif op == 3:
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        t.external_data.add(key="location", value=rng.choice(
            ["../../etc/passwd", "/etc/hostname", "w.bin", "", "a\x00b"]))
        t.external_data.add(key="length", value=str(rng.choice([0, 10, *HUGE])))
    else:
        t.dims.extend([rng.choice([2, *HUGE])])


def _mutate_node(m: onnx.ModelProto, rng: random.Random) -> None:
    nodes = m.graph.node
    if not nodes:
        return
    n = rng.choice(nodes)
    op = rng.randrange(6)
    if op == 0:
        n.op_type = rng.choice(["Conv", "Gemm", "MatMul", "Reshape", "Softmax", "Nope",
                                "Loop", "If", "Gather", "Resize", "Concat", "Identity"])
    elif op == 1 and n.input:
        n.input[rng.randrange(len(n.input))] = rng.choice(["", "missing", n.output[0]])
    elif op == 2:
        del nodes[rng.randrange(len(nodes))]
    elif op == 3 and n.attribute:
        a = rng.choice(n.attribute)
        if a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice([0, -1, -5, *HUGE])
        elif a.type == onnx.AttributeProto.INT:
            a.i = rng.choice([0, -1, *HUGE])
    elif op == 4:
        nodes.append(onnx.NodeProto.FromString(n.SerializeToString()))  # duplicate outputs
    else:
        n.domain = rng.choice(["", "com.microsoft", "ai.onnx.ml", "bogus"])


def _mutate_model(m: onnx.ModelProto, rng: random.Random) -> None:
    op = rng.randrange(4)
    if op == 0:
        m.opset_import[0].version = rng.choice([1, 6, 11, 13, 17, 21, 23, 99, 0, -1])
    elif op == 1:
        m.ir_version = rng.choice([0, 1, 3, 8, 10, 99])
    elif op == 2 and m.graph.output:
        del m.graph.output[:]
    else:
        m.graph.input[0].type.tensor_type.elem_type = rng.choice([0, 1, 6, 7, 10, 11, 9, 16])


def onnx_proto(rng: random.Random, work: Path) -> Call:
    """Structural mutations of a valid model's protobuf: dims, initializers, nodes, opsets."""
    m = onnx.ModelProto.FromString(rng.choice(_seed_models()))
    mutators = (_mutate_dims, _mutate_init, _mutate_node, _mutate_model)
    for _ in range(rng.randint(1, 3)):
        rng.choice(mutators)(m, rng)
    path = work / "m.onnx"
    path.write_bytes(m.SerializeToString())
    return _load_and_simulate(path)
