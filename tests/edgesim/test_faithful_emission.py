"""Faithful emission: the emitted model keeps the source's interface (names, dtypes, symbolic
dims, opset) and loads in onnxruntime with default options; MLPerf-Tiny-style DS-CNN (KWS) and
MobileNetV1-0.25 (VWW) models, built here, quantise and run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import zoo
from edgesim.quantize import quantize_model

pytestmark = pytest.mark.ort
RNG = np.random.default_rng(0)


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _interface(m: onnx.ModelProto) -> list:
    return [(v.name, v.type.tensor_type.elem_type, _dims(v)) for v in [*m.graph.input,
                                                                     *m.graph.output]]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bits", [8, 4, "mixed"])
@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_emitted_digits_models_keep_a_dynamic_batch(tmp_path, name: str, bits) -> None:
    """The whole 360-sample test split in one call equals 360 calls at batch 1."""
    data = zoo.load_digits_data()
    source = zoo.build(name)
    if bits == "mixed":  # every other MAC layer float, the rest W8A8 or W4
        from compiler.frontend import load

        macs = [la.name for la in load(source).layers if la.kind in ("conv", "linear")]
        bits = {n: [8, 8] if i % 3 == 0 else [4, 32] if i % 3 == 1 else [32, 32]
                for i, n in enumerate(macs)}
    out, calib = tmp_path / "q.onnx", tmp_path / "calib.npz"
    np.savez(calib, input=data["x_calib"][:16])
    quantize_model(source, bits, calib=calib, out=out)
    emitted = onnx.load(out)
    assert _interface(emitted) == _interface(source)
    s = _session(out)
    x = data["x_test"]
    assert len(x) == 360
    (whole,) = s.run(None, {"input": x})
    single = np.concatenate([s.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    # onnxruntime's int8 GEMMs take another kernel at M = 1 than at M > 1 (another float
    # summation order), so now and then one activation rounds to the neighbouring code and a
    # sample's logits move by a quantisation step: at most 1 % of rows, never the decision.
    close = np.isclose(whole, single, rtol=1e-5, atol=1e-5 * np.abs(single).max()).all(axis=1)
    assert close.mean() >= 0.99, np.flatnonzero(~close)
    assert (whole.argmax(1) == single.argmax(1)).all()
    assert (whole.argmax(1) == data["y_test"]).mean() > 0.8


def _opset(m: onnx.ModelProto) -> int:
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


def test_source_opset_is_kept_unless_a_format_needs_newer(tmp_path) -> None:
    """W8A8 needs nothing newer than the source's 17; W4 convs use INT4 initializers
    (opset 21)."""
    source = zoo.build("digits_cnn")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=zoo.load_digits_data()["x_calib"][:8])
    assert _opset(source) == 17
    quantize_model(source, 8, calib=calib, out=tmp_path / "a.onnx")
    quantize_model(source, 4, calib=calib, out=tmp_path / "b.onnx")
    assert _opset(onnx.load(tmp_path / "a.onnx")) == 17
    assert _opset(onnx.load(tmp_path / "b.onnx")) == 21


# --- MLPerf-Tiny-style models (architectures of the MLPerf Tiny reference models) -----------


class _Net:
    """A small ONNX graph builder: conv (+ folded BN as bias) + ReLU chains."""

    def __init__(self) -> None:
        self.nodes, self.inits, self.n = [], [], 0

    def _w(self, shape: tuple[int, ...]) -> str:
        self.n += 1
        fan_in = int(np.prod(shape[1:]))
        w = (RNG.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(w, f"w{self.n}"))
        self.inits.append(numpy_helper.from_array(
            (RNG.standard_normal(shape[0]) * 0.1).astype(np.float32), f"b{self.n}"))
        return str(self.n)

    def conv(self, x: str, cin: int, cout: int, k: tuple[int, int], stride: int = 1,
             group: int = 1, relu: bool = True) -> str:
        i = self._w((cout, cin // group, *k))
        pads = [k[0] // 2, k[1] // 2, (k[0] - 1) // 2, (k[1] - 1) // 2]
        self.nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"],
                                           name=f"conv{i}", kernel_shape=list(k),
                                           strides=[stride, stride], pads=pads, group=group))
        if not relu:
            return f"c{i}"
        self.nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        return f"r{i}"

    def head(self, x: str, pool: tuple[int, int], cin: int, classes: int,
             in_shape: list) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("AveragePool", [x], ["pool"], name="pool",
                                           kernel_shape=list(pool)))
        self.nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"))
        w = (RNG.standard_normal((cin, classes)) * 0.1).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, "fc_w"),
                       numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]
        self.nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"],
                                           name="fc"))
        g = helper.make_graph(
            self.nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                               in_shape)],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
            self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def ds_cnn() -> onnx.ModelProto:
    """MLPerf Tiny keyword spotting DS-CNN: 49x10 MFCC, conv 10x4/2 (64), four depthwise-
    separable blocks (64), average pool 25x5, 12 classes."""
    b = _Net()
    x = b.conv("input", 1, 64, (10, 4), stride=2)
    for _ in range(4):
        x = b.conv(b.conv(x, 64, 64, (3, 3), group=64), 64, 64, (1, 1))
    return b.head(x, (25, 5), 64, 12, ["N", 1, 49, 10])


def mobilenet_v1_025() -> onnx.ModelProto:
    """MLPerf Tiny visual wake words MobileNetV1 (alpha 0.25) at 96x96: 13 depthwise-separable
    blocks, average pool 3x3, 2 classes."""
    b = _Net()
    x, cin = b.conv("input", 3, 8, (3, 3), stride=2), 8
    plan = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)] + [(128, 1)] * 5 + [
        (256, 2), (256, 1)]
    for cout, stride in plan:
        x = b.conv(b.conv(x, cin, cin, (3, 3), stride=stride, group=cin), cin, cout, (1, 1))
        cin = cout
    return b.head(x, (3, 3), 256, 2, ["N", 3, 96, 96])


@pytest.mark.parametrize("bits", ["8", "4"])
@pytest.mark.parametrize("build", [ds_cnn, mobilenet_v1_025], ids=["ds_cnn", "mbv1_025"])
def test_mlperf_tiny_models_quantize_and_run_in_onnxruntime(tmp_path, build, bits: str) -> None:
    src, out = tmp_path / "model.onnx", tmp_path / "model.q.onnx"
    model = build()
    onnx.checker.check_model(model)
    onnx.save(model, src)
    done = subprocess.run([sys.executable, "-m", "edgesim", "quantize", str(src), "--bits", bits,
                           "--calib-random", "4", "-o", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    s = _session(out)  # default session options
    shape = [3 if isinstance(d, str) else d for d in _dims(model.graph.input[0])]
    x = RNG.standard_normal(shape).astype(np.float32)
    (y,) = s.run(None, {"input": x})
    (ref,) = _session(src).run(None, {"input": x})
    assert y.shape == ref.shape and np.isfinite(y).all()
    cos = (y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref)
    assert cos > 0.9


def test_provenance_metadata(tmp_path) -> None:
    """producer and metadata_props: version, source producer, the per-layer plan; compile adds
    target, method, budget and per-layer predicted latency matching report.json."""
    import json

    from compiler.frontend import load
    from edgesim.pipeline import CompileOptions, compile_model

    r = compile_model("zoo:digits_cnn", "rpi5", tmp_path / "out", calib_random=4,
                      options=CompileOptions(method="proxy", quiet=True))
    m = onnx.load(r.files["model"])
    props = {p.key: p.value for p in m.metadata_props}
    assert m.producer_name == "edgesim" and props["edgesim.version"] == m.producer_version
    assert props["edgesim.target"] == "rpi5" and props["edgesim.method"] == "proxy"
    assert props["edgesim.source_producer"].startswith(zoo.build("digits_cnn").producer_name)
    plan = {p["layer"]: (p["w_bits"] or 32, p["a_bits"] or 32)
            for p in json.loads(props["edgesim.plan"])}
    report = {x.name: (x.w_bits, x.a_bits) for x in r.layers}
    assert plan and all(report[name] == bits for name, bits in plan.items())
    predicted = json.loads(props["edgesim.predicted_latency_ms"])
    folded = json.loads(props.get("edgesim.folded", "{}"))  # plan layers the file has no node for
    assert all(predicted.pop(name) == 0 for name in folded)
    assert predicted == pytest.approx({x.name: x.latency_ms for x in r.layers}, abs=1e-6)
    # the emitted file read back carries the same plan
    back = {la.name: (la.quant.w_bits or 32, la.quant.a_bits or 32)
            for la in load(r.files["model"]).layers if la.name in plan}
    assert back == {k: v for k, v in plan.items() if v != (32, 32)} | {
        k: v for k, v in plan.items() if v == (32, 32) and k in back}


def test_dynamic_batch_survives_whole_axis_slices_and_flattens(tmp_path) -> None:
    """A dynamic-batch model whose Slice keeps the whole batch axis and whose Reshape copies
    the batch (0) and flattens the rest (-1), as jax2tf exports do (magika): the emitted
    model run on 5 samples at once equals 5 runs at batch 1 (it was cut to batch 1)."""
    from onnx import TensorProto, helper, numpy_helper

    big = np.iinfo(np.int64).max
    consts = {"starts": [0, 0, 1], "ends": [big, 4, 6], "axes": [0, 1, 2], "shape": [0, -1]}
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()]
    inits.append(numpy_helper.from_array(RNG.standard_normal((20, 3)).astype(np.float32), "w"))
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 4, 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 3])], inits)
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src, out, calib = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "calib.npz"
    onnx.save(source, src)
    x = RNG.standard_normal((5, 4, 6)).astype(np.float32)
    np.savez(calib, x=x)
    for bits in (8, 4, "fp32"):
        quantize_model(str(src), bits, calib=calib, out=out)
        s = _session(out)
        (whole,) = s.run(None, {"x": x})
        single = np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(5)])
        assert whole.shape == (5, 3)
        np.testing.assert_allclose(whole, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())


def test_dynamic_batch_survives_an_upsampling_resize(tmp_path) -> None:
    """A dynamic-batch model that upsamples x2 with Resize scales and concatenates the result
    with a skip (YOLOv8's neck, nudenet): the emitted fp32 model run on 3 samples at once
    equals the source in onnxruntime, and the 8-bit one equals 3 runs at batch 1 (Resize was
    emitted with sizes [1, C, H, W], so the Concat failed at batch 3)."""
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(RNG.standard_normal((4, 6, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Concat", ["u", "x"], ["c"], axis=1),
             helper.make_node("Conv", ["c", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src, out, calib = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "calib.npz"
    onnx.save(source, src)
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.savez(calib, x=x)
    (expected,) = _session(src).run(None, {"x": x})
    for bits in ("fp32", 8):
        quantize_model(str(src), bits, calib=calib, out=out)
        s = _session(out)
        (whole,) = s.run(None, {"x": x})
        single = np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(3)])
        assert whole.shape == (3, 4, 8, 8)
        np.testing.assert_allclose(whole, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())
        if bits == "fp32":
            np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-5)


def test_an_output_dim_written_as_a_formula_of_a_pinned_dim_is_declared_static(tmp_path) -> None:
    """Shape inference writes YOLOv8's box count as a formula of 'height' and 'width'; with
    those pinned by `input_shapes` the emitted model runs at that size only, so its output
    must declare the size it produces there (it kept the formula: nudenet, helper r). Oracle:
    the shape onnxruntime's run of the emitted file gives, at batch 3."""
    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, "H", "W"])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 4, "floor(H/2 - 1/2) + 1", "floor(W/2 - 1/2) + 1"])],
        [w])
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    quantize_model(str(src), "fp32", calib_random=2, out=out, input_shapes={"x": (1, 3, 8, 10)})
    emitted = onnx.load(out)
    (y,) = _session(out).run(None, {"x": RNG.standard_normal((3, 3, 8, 10)).astype(np.float32)})
    assert _dims(emitted.graph.output[0]) == ["N", *y.shape[1:]] == ["N", 4, 4, 5]
