"""A dynamic batch the source declares survives emission only where the emitted file runs at
every batch (`compiler.emit.batch`); oracle: onnxruntime on the source model at batch 3."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim.quantize import quantize_model

pytestmark = pytest.mark.ort
RNG = np.random.default_rng(0)


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _model(nodes: list, x: list, y: list, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _attention_rows() -> onnx.ModelProto:
    """PP-OCR's SVTR attention as Paddle exports it: the [N, 4, 6, 6] scores flattened to
    rows [-1, 6] for a Softmax over the last axis and back, then the heads merged with a
    Reshape that copies the batch (0): lowered at batch 1 the row count is a literal 24."""
    inits = {"rows": np.array([-1, 6], np.int64), "heads": np.array([-1, 4, 6, 6], np.int64),
             "merge": np.array([0, 6, 20], np.int64),
             "w": RNG.standard_normal((20, 7)).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["x", "xt"], ["s"]),
             helper.make_node("Reshape", ["s", "rows"], ["r"]),
             helper.make_node("Softmax", ["r"], ["p"], axis=1),
             helper.make_node("Reshape", ["p", "heads"], ["a"]),
             helper.make_node("MatMul", ["a", "x"], ["o"]),
             helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["ot", "merge"], ["m"]),
             helper.make_node("MatMul", ["m", "w"], ["y"])]
    return _model(nodes, ["N", 4, 6, 5], ["N", 6, 7], inits)


@pytest.mark.parametrize("bits", ["fp32", 8])
def test_a_reshape_that_folds_the_batch_into_rows_runs_at_every_batch(tmp_path, bits) -> None:
    """The emitted file keeps the batch dynamic and runs at batch 3: fp32 equals the source
    there, W8A8 equals three runs at batch 1 (the old emitter wrote the row count 24 and
    onnxruntime failed: 'cannot reshape {3,4,6,6} to {24,6}')."""
    src, out, calib = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "calib.npz"
    onnx.save(_attention_rows(), src)
    x = RNG.standard_normal((3, 4, 6, 5)).astype(np.float32)
    np.savez(calib, x=x)
    quantize_model(str(src), bits, calib=calib, out=out)
    emitted = onnx.load(out)
    assert _dims(emitted.graph.input[0]) == ["N", 4, 6, 5]
    assert _dims(emitted.graph.output[0]) == ["N", 6, 7]
    s = _session(out)
    (whole,) = s.run(None, {"x": x})
    single = np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(whole, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())
    if bits == "fp32":
        (expected,) = _session(src).run(None, {"x": x})
        np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-5)


def _unsqueezed() -> onnx.ModelProto:
    """The batch under axes of size 1: silero's LSTM input [seq 1, N, 128] (Unsqueeze, then
    a Gather of the time step) and PP-OCR's heads [1, N, ...] squeezed back to [N, ...].
    Lowered at batch 1, [1, 6, 5] -> [1, 1, 6, 5] leaves the batch on axis 0 or 1."""
    inits = {"zero": np.array([0], np.int64), "step": np.array(0, np.int64),
             "w": RNG.standard_normal((6, 3)).astype(np.float32)}
    nodes = [helper.make_node("Unsqueeze", ["x", "zero"], ["u"]),
             helper.make_node("Gather", ["u", "step"], ["g"], axis=0),
             helper.make_node("Transpose", ["u"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Squeeze", ["t", "zero"], ["s"]),
             helper.make_node("Transpose", ["g"], ["gt"], perm=[0, 2, 1]),
             helper.make_node("Add", ["s", "gt"], ["a"]),
             helper.make_node("MatMul", ["a", "w"], ["y"])]
    return _model(nodes, ["N", 6, 5], ["N", 5, 3], inits)


@pytest.mark.parametrize("bits", ["fp32", 8])
def test_a_batch_under_unit_axes_stays_where_the_source_has_it(tmp_path, bits) -> None:
    """The emitted file equals the source at batch 3 (fp32) and three runs at batch 1 (W8A8);
    the old emitter put the batch on axis 0 of the unsqueezed tensor, the Gather then took
    sample 0 and onnxruntime returned [1, 5, 3] at batch 3."""
    src, out, calib = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "calib.npz"
    onnx.save(_unsqueezed(), src)
    x = RNG.standard_normal((3, 6, 5)).astype(np.float32)
    np.savez(calib, x=x)
    quantize_model(str(src), bits, calib=calib, out=out)
    s = _session(out)
    (whole,) = s.run(None, {"x": x})
    single = np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(3)])
    assert whole.shape == (3, 5, 3)
    np.testing.assert_allclose(whole, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())
    if bits == "fp32":
        (expected,) = _session(src).run(None, {"x": x})
        np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-5)


def test_a_recurrent_state_keeps_its_batch_axis(tmp_path) -> None:
    """silero's state [2, N, 4]: a direction's slice [N, 4] is unsqueezed to [1, N, 4] and two
    of them concatenated back. Lowered at batch 1, [1, 4] -> [1, 1, 4] could put the batch on
    any axis, and the output's dims are all symbolic (as silero declares them), so only the
    Concat tells: the emitted file equals the source at batch 3 (the old emitter returned a
    batch-1 state; a flow that merged the batch into the last axis returned [2, 1, 12])."""
    inits = {"zero": np.array([0], np.int64), "first": np.array(0, np.int64),
             "w": RNG.standard_normal((4, 3)).astype(np.float32)}
    nodes = [helper.make_node("Gather", ["state", "first"], ["h"], axis=0),
             helper.make_node("Add", ["x", "h"], ["a"]),
             helper.make_node("Mul", ["a", "a"], ["b"]),
             helper.make_node("Unsqueeze", ["a", "zero"], ["a1"]),
             helper.make_node("Unsqueeze", ["b", "zero"], ["b1"]),
             helper.make_node("Concat", ["a1", "b1"], ["state_out"], axis=0),
             helper.make_node("MatMul", ["a", "w"], ["y"])]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", f32, ["N", 4]),
                     helper.make_tensor_value_info("state", f32, [2, "N", 4])],
        [helper.make_tensor_value_info("y", f32, ["N", 3]),
         helper.make_tensor_value_info("state_out", f32, ["s0", "s1", "s2"])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    feed = {"x": RNG.standard_normal((3, 4)).astype(np.float32),
            "state": RNG.standard_normal((2, 3, 4)).astype(np.float32)}
    quantize_model(str(src), "fp32", calib_random=2, out=out)
    got = _session(out).run(["y", "state_out"], feed)
    want = _session(src).run(["y", "state_out"], feed)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_constant_the_source_expands_to_the_batch_is_expanded_again(tmp_path) -> None:
    """A state built from the input's shape (ConstantOfShape of [N, 4], as vit_tiny's CLS
    token is expanded to the batch) is folded at batch 1 into a [1, 4] constant and
    concatenated with x: the emitted file expands it to the batch and equals the source at
    batch 3 (it declared N and onnxruntime failed in the Concat)."""
    inits = {"four": np.array([4], np.int64), "zero": np.array([0], np.int64),
             "one": np.array([1], np.int64), "w": RNG.standard_normal((10, 3)).astype(np.float32)}
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Slice", ["sh", "zero", "one"], ["n"]),
             helper.make_node("Concat", ["n", "four"], ["hs"], axis=0),
             helper.make_node("ConstantOfShape", ["hs"], ["h"], value=helper.make_tensor(
                 "v", TensorProto.FLOAT, [1], [0.5])),
             helper.make_node("Concat", ["x", "h"], ["c"], axis=1),
             helper.make_node("MatMul", ["c", "w"], ["y"])]
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_model(nodes, ["N", 6], ["N", 3], inits), src)
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    quantize_model(str(src), "fp32", calib_random=2, out=out)
    assert _dims(onnx.load(out).graph.input[0]) == ["N", 6]
    (got,) = _session(out).run(None, {"x": x})
    np.testing.assert_allclose(got, _session(src).run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_a_batch_the_file_cannot_vary_is_declared_fixed(tmp_path) -> None:
    """A Resize to sizes built from the input's shape ([N, 2, 7, 7]: 7 / 5 has no exact
    float32 scale, so the file writes the sizes) is folded at batch 1: the emitted file
    declares batch 1 (it declared N and onnxruntime failed in the Resize at batch 3), runs as
    the source there, and its metadata names the layer that fixed the batch."""
    inits = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64),
             "hw": np.array([2, 7, 7], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Slice", ["sh", "zero", "one"], ["n"]),
             helper.make_node("Concat", ["n", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")]
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_model(nodes, ["N", 2, 5, 5], ["N", 2, 7, 7], inits), src)
    x = RNG.standard_normal((3, 2, 5, 5)).astype(np.float32)
    assert _session(src).run(None, {"x": x})[0].shape == (3, 2, 7, 7)  # the source runs at 3
    quantize_model(str(src), "fp32", calib_random=2, out=out)
    emitted = onnx.load(out)
    assert _dims(emitted.graph.input[0]) == [1, 2, 5, 5]
    assert _dims(emitted.graph.output[0]) == [1, 2, 7, 7]
    (got,) = _session(out).run(None, {"x": x[:1]})
    np.testing.assert_allclose(got, _session(src).run(None, {"x": x[:1]})[0], rtol=1e-5,
                               atol=1e-6)
    props = {p.key: p.value for p in emitted.metadata_props}
    assert props["edgesim.fixed_batch"].startswith("layer Resize")


def test_a_reduction_over_the_batch_keeps_it_dynamic(tmp_path) -> None:
    """openWakeWord's melspectrogram clamps to 80 dB below the maximum over all axes, the
    batch included: the reduction takes whatever batch it gets, so the file stays dynamic
    and equals the source at batch 3."""
    inits = {"floor": np.array(80.0, np.float32)}
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Sub", ["m", "floor"], ["low"]),
             helper.make_node("Max", ["x", "low"], ["y"])]
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(_model(nodes, ["N", 4, 8], ["N", 4, 8], inits), src)
    x = RNG.uniform(-100, 20, (3, 4, 8)).astype(np.float32)
    quantize_model(str(src), "fp32", calib_random=2, out=out)
    assert _dims(onnx.load(out).graph.input[0]) == ["N", 4, 8]
    (got,) = _session(out).run(None, {"x": x})
    np.testing.assert_allclose(got, _session(src).run(None, {"x": x})[0])
