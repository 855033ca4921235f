"""MatMulNBits with float zero points (or g_idx): onnxruntime cannot prepack B and runs its
slow path, dequantising B to fp32 and an fp32 GEMM on every run (microsoft/onnxruntime
#28552). The reader marks such a layer `nbits_float_zp` and the cost model costs that path."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.formats import FORMAT_CODE
from compiler.frontend import load
from compiler.packing import pack_matmulnbits_codes
from edgesim import api

pytestmark = pytest.mark.ort
M, K, N, BITS, BLOCK = 1, 512, 384, 4, 32


def _model(float_zp: bool, g_idx: bool = False) -> onnx.ModelProto:
    """y = x @ W, W as 4-bit MatMulNBits with non-default zero points: packed uint8, or the
    same values as a float tensor."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (K, N))
    zps = rng.integers(0, 16, (N, K // BLOCK)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.02, (N, K // BLOCK)).astype(np.float32)
    blob = pack_matmulnbits_codes(codes, scales, zps, BITS, BLOCK)
    zp = zps.astype(np.float32) if float_zp else blob.zero_points
    inits = [numpy_helper.from_array(a, name) for a, name in
             ((blob.b, "B"), (blob.scales, "scales"), (zp, "zp"))]
    ins = ["x", "B", "scales", "zp"]
    if g_idx:  # the identity block order, written explicitly
        inits.append(numpy_helper.from_array((np.arange(K) // BLOCK).astype(np.int32), "gi"))
        ins.append("gi")
    node = helper.make_node("MatMulNBits", ins, ["y"], name="fc", domain="com.microsoft",
                            **blob.attrs())
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _fc_code(model: onnx.ModelProto) -> int:
    g = load(model)
    return int(g.layer_table().fmt_code[[la.name for la in g.layers].index("fc")])


def _weight(g) -> np.ndarray:
    """fc's dequantised weight as [K, N] (the reader may store it transposed for a Gemm)."""
    w = next(v for v in g.weights.values() if v.shape in ((K, N), (N, K)))
    return w if w.shape == (K, N) else w.T


def test_float_zero_points_read_as_the_unpacked_row_with_the_same_weight():
    packed, unpacked = load(_model(False)), load(_model(True))
    assert _fc_code(_model(False)) == FORMAT_CODE["nbits_fp32"]
    assert _fc_code(_model(True)) == FORMAT_CODE["nbits_float_zp"]
    assert _fc_code(_model(False, g_idx=True)) == FORMAT_CODE["nbits_float_zp"]
    # the dequantised weight the reader keeps is what onnxruntime multiplies by
    x = np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)
    want = _ort(_model(True), x)
    w = _weight(unpacked)
    np.testing.assert_allclose(x @ w, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    w_packed = _weight(packed)
    np.testing.assert_allclose(w, w_packed, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("target", ["rpi5", "rpi4"])
def test_simulate_predicts_the_unpacked_cliff(target: str):
    """The slow path writes B as fp32 (4 bytes per weight) and re-reads it in an fp32 GEMM:
    never faster than the fp32 model's layer, and slower than prepacked MatMulNBits, whose
    GEMV streams 0.5-byte weights."""
    def fc(model: onnx.ModelProto):
        sim = api.simulate(model, target)
        return next(r for r in sim.layers if r.name == "fc"), sim

    slow, sim = fc(_model(True))
    fast, _ = fc(_model(False))
    assert slow.latency_ms > 1.5 * fast.latency_ms
    assert sim.total.latency_ms >= sim.fp32.latency_ms
