"""onnxruntime's QOperator files (quantize_static(quant_format=QOperator): QLinearConv,
QLinearMatMul, QGemm, QLinearAdd/Mul/Softmax/GlobalAveragePool, Gather of a quantized table)
read as their float layers with the file's own W8A8 plan (compiler/frontend/qoperator.py).

Oracles: onnxruntime runs the QDQ rewrite to the same outputs as the QOperator file; the
float model the file was quantized from has the same MAC layers; onnxruntime's profile of the
file maps every node to a layer."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.frontend import load
from compiler.frontend.qoperator import QOPERATOR, to_qdq
from edgesim import api, zoo
from edgesim import validate as V
from hwmodels.probe import host_arch
from hwmodels.target import load_target
from tests.edgesim.test_cli import _one_line_error, edgesim

pytestmark = pytest.mark.ort
MODELS = {"digits_cnn": {}, "resnet18": {"resolution": 32}, "digits_transformer": {},
          "minilm": {"seq": 16, "depth": 1}}


def _feeds(model: onnx.ModelProto, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        feed = {}
        for i in model.graph.input:
            t = i.type.tensor_type
            shape = [d.dim_value or 1 for d in t.shape.dim]
            feed[i.name] = rng.standard_normal(shape).astype(np.float32) \
                if t.elem_type == TensorProto.FLOAT else rng.integers(0, 100, shape)
        out.append(feed)
    return out


def _qoperator(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    src, out = tmp_path / f"{name}.onnx", tmp_path / f"{name}.qop.onnx"
    onnx.save(zoo.build(name, **MODELS[name]), src)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(_feeds(onnx.load(src), 4, 0))

        def get_next(self) -> dict | None:
            return next(self.it, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QOperator,
                    per_channel=True)
    return src, out


def _each_op_computes_what_the_file_computes(q: onnx.ModelProto) -> None:
    """Every QOperator node alone, on the codes the whole file computes for it, against its
    QDQ rewrite (both run as written by onnxruntime): codes at most one step apart, where a
    value rounds the other way (QLinearAdd's kernel rounds its own way: up to ~2 % of its
    elements; a wrong scale, zero point, axis or bias moves codes by many steps). Whole
    models drift further: one such step in resnet18's first QLinearAdd grows to 3 steps at
    the output through 14 layers."""
    ops = [n for n in q.graph.node if n.op_type in QOPERATOR]
    inits = {t.name: t for t in q.graph.initializer}
    wanted = sorted({t for n in ops for t in n.input if t and t not in inits})
    probe = onnx.ModelProto()
    probe.CopyFrom(q)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in wanted
                              if t not in {o.name for o in q.graph.output})
    feed = _feeds(q, 1, 7)[0]
    names = [o.name for o in probe.graph.output]
    values = dict(zip(names, _run(probe, feed), strict=True)) | feed
    for node in ops:
        ins = [t for t in dict.fromkeys(node.input) if t and t not in inits]
        graph = helper.make_graph(
            [node], "one", [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(
                values[t].dtype), values[t].shape) for t in ins],
            [helper.make_empty_tensor_value_info(node.output[0])],
            [inits[t] for t in dict.fromkeys(node.input) if t in inits])
        one = helper.make_model(graph, opset_imports=q.opset_import)
        one_feed = {t: values[t] for t in ins}
        a, b = _run(one, one_feed)[0], _run(to_qdq(one), one_feed)[0]
        steps = np.abs(a.astype(np.int64) - b.astype(np.int64))
        assert steps.max() <= 1 and np.sum(steps) <= max(1, 0.05 * a.size), node.name


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feed)


@pytest.mark.parametrize("name", list(MODELS))
def test_qoperator_file_reads_as_its_float_layers_at_w8a8(tmp_path: Path, name: str) -> None:
    """Old code: exit 2, 'unsupported ops: QLinearConv, ...'."""
    src, qop = _qoperator(tmp_path, name)
    q = onnx.load(qop)
    assert any(n.op_type.startswith("QLinear") for n in q.graph.node)
    _each_op_computes_what_the_file_computes(q)
    g = load(qop)
    gemms = [la for la in g.layers if la.kind in ("conv", "linear")]
    assert gemms and all((la.quant.w_bits, la.quant.a_bits) == (8, 8) for la in gemms)
    sim, fp = (api.simulate(str(p), "rpi5").layers for p in (qop, src))
    assert Counter((r.kind, r.macs) for r in sim if r.macs) == \
        Counter((r.kind, r.macs) for r in fp if r.macs)
    assert {(r.w_bits, r.a_bits) for r in sim if r.kind in ("conv", "linear")} == {(8, 8)}


def test_validate_maps_every_node_of_a_qoperator_file(tmp_path: Path) -> None:
    here = dataclasses.replace(load_target("rpi5"), name="here", arch=host_arch(), isa=(),
                               cores=1)
    _, qop = _qoperator(tmp_path, "digits_cnn")
    v = V.validate(str(qop), here, runs=2)
    assert v.bits == V.OWN_PLAN and v.unmapped_nodes == ()
    planned = api.simulate(str(qop), here, threads=1)
    assert sorted(name for r in v.rows for name in r.layers) == \
        sorted(la.name for la in planned.layers)


def test_an_unknown_qoperator_op_is_refused_by_name(tmp_path: Path) -> None:
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    zero = helper.make_tensor("zero", TensorProto.UINT8, [], [0])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "one", "zero"], ["xq"], name="q"),
         helper.make_node("QLinearWhere", ["c", "xq", "one", "zero", "xq", "one", "zero",
                                           "one", "zero"], ["yq"], name="w",
                          domain="com.microsoft"),
         helper.make_node("DequantizeLinear", ["yq", "one", "zero"], ["y"], name="dq")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [one, zero])
    path = tmp_path / "where.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]),
              path)
    _one_line_error(edgesim("simulate", str(path), "--target", "rpi5"), "QLinearWhere")


def _small_cnn() -> onnx.ModelProto:
    """Conv -> Sigmoid / LeakyRelu -> Concat -> AveragePool -> MaxPool -> Flatten -> Gemm."""
    rng = np.random.default_rng(1)
    def w(name, *shape):  # noqa: ANN001, ANN202
        return onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
             helper.make_node("LeakyRelu", ["c"], ["r"], alpha=0.1, name="leaky"),
             helper.make_node("Concat", ["s", "r"], ["cat"], axis=1, name="cat"),
             helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2],
                              strides=[2, 2], name="avg"),
             helper.make_node("MaxPool", ["ap"], ["mp"], kernel_shape=[2, 2], strides=[2, 2],
                              name="max"),
             helper.make_node("Flatten", ["mp"], ["fl"], name="flat"),
             helper.make_node("Gemm", ["fl", "w2", "b2"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [w("w1", 4, 3, 3, 3), w("b1", 4), w("w2", 5, 32), w("b2", 5)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_concat_sigmoid_leaky_relu_and_pools_read_as_their_float_layers(tmp_path: Path
                                                                         ) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    src, qop = tmp_path / "small.onnx", tmp_path / "small.qop.onnx"
    onnx.save(_small_cnn(), src)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(_feeds(onnx.load(src), 4, 0))

        def get_next(self) -> dict | None:
            return next(self.it, None)

    quantize_static(str(src), str(qop), Reader(), quant_format=QuantFormat.QOperator)
    q = onnx.load(qop)
    ops = {n.op_type for n in q.graph.node}
    assert {"QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
            "MaxPool"} <= ops, ops
    _each_op_computes_what_the_file_computes(q)
    sim, fp = (api.simulate(str(p), "rpi5").layers for p in (qop, src))
    assert Counter((r.kind, r.macs) for r in sim if r.macs) == \
        Counter((r.kind, r.macs) for r in fp if r.macs)
    assert {(r.w_bits, r.a_bits) for r in sim if r.kind in ("conv", "linear")} == {(8, 8)}
