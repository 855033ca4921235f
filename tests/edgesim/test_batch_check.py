"""An emitted file must compute at every batch it declares what it computes per sample
(edgesim.kernel_check.per_sample_batch). The emitter follows the batch through shapes only: a
reshape folding the batch into an axis a softmax then normalises keeps every shape consistent
and mixes the samples. Oracle: onnxruntime running the written file at batch 2 against each
sample at batch 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import zoo
from edgesim.quantize import quantize_model

pytestmark = pytest.mark.ort


def _mixing_model() -> onnx.ModelProto:
    """x [N, 4, 6] @ W -> [4, N, 6] -> reshape [4, N*6] -> softmax over the last axis ->
    back: the softmax normalises over every sample's values at once at batch > 1."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((6, 6)).astype(
        np.float32), "w")
    flat = numpy_helper.from_array(np.array([4, 6], np.int64), "flat")
    back = numpy_helper.from_array(np.array([4, 1, 6], np.int64), "back")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Transpose", ["h"], ["t"], perm=[1, 0, 2], name="tr"),
             helper.make_node("Reshape", ["t", "flat"], ["f"], name="fold"),
             helper.make_node("Softmax", ["f"], ["s"], axis=-1, name="sm"),
             helper.make_node("Reshape", ["s", "back"], ["u"], name="unfold"),
             helper.make_node("Transpose", ["u"], ["y"], perm=[1, 0, 2], name="tr2")]
    graph = helper.make_graph(
        nodes, "mix", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6])], [w, flat, back])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _per_sample_at_batch_2(path: Path) -> tuple[bool, float]:
    """(whether the file declares a dynamic batch, how far its batch-2 output is from its
    two batch-1 outputs, as a share of their distance; 0 when it declares batch 1)."""
    model = onnx.load(path)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if dim.HasField("dim_value"):
        return False, 0.0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(2))
    name = model.graph.input[0].name
    ya, yb = (sess.run(None, {name: x})[0] for x in (a, b))
    y2 = sess.run(None, {name: np.concatenate([a, b])})[0]
    off = max(np.linalg.norm(y2[:1] - ya), np.linalg.norm(y2[1:] - yb))
    return True, float(off / np.linalg.norm(ya - yb))


def test_a_file_that_mixes_samples_at_batch_2_declares_batch_1(tmp_path: Path) -> None:
    """Old code wrote the file with batch N; at batch 2 its outputs were 0.49 of the two
    samples' distance away from their batch-1 outputs."""
    src, out = tmp_path / "mix.onnx", tmp_path / "mix.q.onnx"
    onnx.save(_mixing_model(), src)
    result = quantize_model(str(src), 8, calib_random=4, out=out)
    dynamic, off = _per_sample_at_batch_2(out)
    assert off < 1e-3
    assert not dynamic
    assert any("batch" in n and "output y" in n for n in result.notes)
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert "batch 2" in props.get("edgesim.fixed_batch", "")  # says why


def test_a_file_that_runs_per_sample_keeps_its_dynamic_batch(tmp_path: Path) -> None:
    src, out = tmp_path / "cnn.onnx", tmp_path / "cnn.q.onnx"
    onnx.save(zoo.build("digits_cnn"), src)
    result = quantize_model(str(src), 8, calib_random=4, out=out)
    dynamic, off = _per_sample_at_batch_2(out)
    assert dynamic and off < 1e-3
    assert not any("batch-1 outputs" in n for n in result.notes)
