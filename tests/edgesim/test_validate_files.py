"""`edgesim validate` on files old code mishandled: an already quantized file runs as it is,
against the prediction of its own plan (as `simulate` reads it; bits given for it are
refused), and the nodes onnxruntime inlines from a function body (HardSwish) are measured in
their layer's row. Oracles: onnxruntime's own profile and saved optimised graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgesim import node_map
from edgesim import validate as V
from edgesim.api import simulate
from edgesim.cli import main
from hwmodels.probe import host_arch, target_yaml
from hwmodels.target import load_target


@pytest.fixture(scope="module")
def here():
    """A one-core CPU target of this machine's architecture claiming no ISA feature."""
    return dataclasses.replace(load_target("rpi5"), name="here", arch=host_arch(), isa=(),
                               cores=1)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    """Conv -> Relu -> Conv on [1, 8, 16, 16]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    ws = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
          for n, s in (("w1", (16, 8, 3, 3)), ("w2", (16, 16, 3, 3)))]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], ws)
    path = tmp_path_factory.mktemp("vq") / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _edgesim_w8a8(src, out):
    from edgesim.quantize import quantize_model

    quantize_model(str(src), 8, calib_random=2, out=out)


def _ort_static(src, out):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.data = iter([{"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)}
                              for _ in range(2)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ)


@pytest.mark.ort
@pytest.mark.parametrize("make", [_edgesim_w8a8, _ort_static], ids=["edgesim", "ort_static"])
def test_quantized_file_runs_as_it_is_against_its_own_plan(float_model, here, make):
    """Old code emitted the file's read-back float self again, at fp32 by default: edgesim's
    own W8A8 file failed with KeyError 'conv1::w_codes'."""
    path = float_model.parent / f"{make.__name__}.onnx"
    make(float_model, path)
    v = V.validate(str(path), here, runs=3)
    planned = simulate(str(path), here, threads=1)  # bits None: the file's own plan
    fp32 = simulate(str(float_model), here, threads=1)
    assert v.bits == V.OWN_PLAN
    assert v.predicted_ms == pytest.approx(planned.total.latency_ms)
    assert v.predicted_ms != pytest.approx(fp32.total.latency_ms)  # not the float prediction
    assert [name for r in v.rows for name in r.layers] == [la.name for la in planned.layers]
    assert v.unmapped_nodes == ()
    assert sum(r.measured_ms for r in v.rows) == pytest.approx(v.node_sum_ms)


@pytest.mark.ort
def test_bits_for_a_quantized_file_are_refused_on_one_line(float_model, here, capsys):
    path = float_model.parent / "refused.onnx"
    _edgesim_w8a8(float_model, path)
    yaml = float_model.parent / "here.yaml"
    yaml.write_text(target_yaml(here))
    assert main(["validate", str(path), "--target", str(yaml), "--bits", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already quantized" in err[0] and "Traceback" not in err[0]


def test_unnamed_nodes_take_the_profilers_names_per_op_in_index_order():
    nodes = [("conv", "Conv", ["x"], ["c"]),
             ("", "HardSigmoid", ["c"], ["s1"]), ("", "Mul", ["c", "s1"], ["h1"]),
             ("pool", "MaxPool", ["h1"], ["p"]),
             ("", "HardSigmoid", ["p"], ["s2"]), ("", "Mul", ["p", "s2"], ["y"]),
             ("", "Mul", ["y", "y"], ["z"])]  # no profiled name left for it: stays unnamed
    # the profile lists nodes in any order; "conv_2" is a named node, not an index
    profiled = ["Mul_12", "conv", "HardSigmoid_11", "Mul_9", "HardSigmoid_8", "pool",
                "conv_2"]
    assert [n for n, _, _ in node_map.name_unnamed(nodes, profiled)] == [
        "conv", "HardSigmoid_8", "Mul_9", "pool", "HardSigmoid_11", "Mul_12", ""]


@pytest.mark.ort
def test_inlined_hard_swish_nodes_are_measured_in_their_layers_row(here, tmp_path):
    """onnxruntime runs HardSwish as its function body (HardSigmoid + Mul) in nodes with no
    name in the saved graph: old code left them unmapped and the rows read 0 ms."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal(
        (8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("HardSwish", ["r"], ["h1"], name="hs1"),
         helper.make_node("MaxPool", ["h1"], ["p"], kernel_shape=[2, 2], name="pool"),
         helper.make_node("HardSwish", ["p"], ["y"], name="hs2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 31, 31])], [w])
    path = tmp_path / "hs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    v = V.validate(str(path), here, runs=3)
    assert v.unmapped_nodes == ()
    for layer in ("hs1", "hs2"):
        row = next(r for r in v.rows if layer in r.layers)
        ops = {n.rsplit("_", 1)[0] for n in row.nodes}
        assert {"HardSigmoid", "Mul"} <= ops, row
    assert sum(r.measured_ms for r in v.rows) == pytest.approx(v.node_sum_ms)
