"""Emitted tensor names stay short when the source's are long (`builder.short_names`).

Oracle: the same network with short source names, whose emitted names nothing shortens —
quantisation does not depend on names, so onnxruntime's outputs and the initializers' bytes
must be equal; node names (what `validate` and `kernel_check` read back) keep the layers'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from edgesim import api

# A tf2onnx-style name: two ';'-joined op paths, ~130 characters.
LONG = "model_1/stack_{0}/conv2d_{0}/BiasAdd;model_1/stack_{0}/conv2d_{0}/Conv2D;" \
       "model_1/stack_{0}/conv2d_{0}/BiasAdd/ReadVariableOp/resource_{0}"


def _net(path: Path, name: str) -> Path:
    """x -> Conv -> Relu -> Conv -> Flatten -> Gemm, every node and tensor called `name(i)`."""
    rng = np.random.default_rng(3)
    w = [rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((8, 8, 3, 3)) * 0.3,
         rng.standard_normal((5, 8 * 6 * 6)) * 0.1]
    b = [rng.standard_normal(8), rng.standard_normal(8), rng.standard_normal(5)]
    inits = [numpy_helper.from_array(a.astype(np.float32), name(f"{k}{i}"))
             for i, (wi, bi) in enumerate(zip(w, b)) for k, a in (("w", wi), ("b", bi))]
    t = [name(f"t{i}") for i in range(4)]
    nodes = [helper.make_node("Conv", ["x", name("w0"), name("b0")], [t[0]], name=name("c0"),
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", [t[0]], [t[1]], name=name("r0")),
             helper.make_node("Conv", [t[1], name("w1"), name("b1")], [t[2]], name=name("c1"),
                              pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", [t[2]], [t[3]], name=name("f0")),
             helper.make_node("Gemm", [t[3], name("w2"), name("b2")], ["y"], name=name("g0"),
                              transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 6, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_long_source_names_give_short_derived_names_and_the_same_model(tmp_path: Path) -> None:
    x = np.random.default_rng(4).standard_normal((8, 3, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    models, outs = {}, {}
    for tag, name in (("short", lambda s: s), ("long", lambda s: LONG.format(s))):
        src = _net(tmp_path / f"{tag}_src.onnx", name)
        # kernel_check="fail": onnxruntime's kernels are found by the (long) layer names
        api.quantize(str(src), 8, tmp_path / f"{tag}.onnx", calib=tmp_path / "calib.npz",
                     kernel_check="fail")
        models[tag] = onnx.load(tmp_path / f"{tag}.onnx")
        sess = ort.InferenceSession(str(tmp_path / f"{tag}.onnx"),
                                    providers=["CPUExecutionProvider"])
        outs[tag] = sess.run(None, {"x": x[:1]})[0]
    short, long = models["short"], models["long"]
    np.testing.assert_array_equal(outs["long"], outs["short"])
    assert sorted(t.raw_data for t in long.graph.initializer) == \
        sorted(t.raw_data for t in short.graph.initializer)
    assert [n.op_type for n in long.graph.node] == [n.op_type for n in short.graph.node]
    assert any(n.op_type == "QuantizeLinear" for n in long.graph.node)  # W8A8 was emitted
    # the layers' own nodes keep the source names
    src_nodes = {LONG.format(s) for s in ("c0", "c1", "g0")}
    assert src_nodes <= {n.name for n in long.graph.node}
    # every tensor the emitter made is short: the source names appear only as themselves
    g = load(str(tmp_path / "long_src.onnx"))  # the IR's names (a Gemm's bias is new)
    source = set(g.types) | set(g.weights)
    made = {t for n in long.graph.node for t in (*n.input, *n.output) if t} - source
    made |= {t.name for t in long.graph.initializer} - source
    assert made and max(len(t) for t in made) < 60, sorted(made, key=len)[-1]
    # file size: the long-named file costs little more than its source names once each
    size = {tag: (tmp_path / f"{tag}.onnx").stat().st_size for tag in models}
    once = sum(len(n) for n in source | src_nodes)
    assert size["long"] - size["short"] < 3 * once

