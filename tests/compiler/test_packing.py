"""Packing layouts against onnxruntime's MatMulNBits kernel and quantiser, onnx's INT4 reader,
onnxruntime's blocked DequantizeLinear, and layout formulas written out independently here."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi import _pybind_state as ort_c

from compiler import packing as P
from compiler import packing_neon as PN
from compiler import quantizers as Q
from compiler.errors import ModelError

ORT_QUANTIZE = {2: ort_c.quantize_matmul_2bits, 4: ort_c.quantize_matmul_4bits,
                8: ort_c.quantize_matmul_8bits}
SHAPES = [(100, 7, 32), (48, 3, 16), (300, 5, 64)]  # K % block != 0, odd k_blocks, exact


def _session(nodes: list, inputs: list, outputs: list, inits: list) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _ort_matmulnbits(a: np.ndarray, blob: P.MatMulNBitsBlob, accuracy_level: int) -> np.ndarray:
    """Run one com.microsoft::MatMulNBits node holding the blob's bytes."""
    inits = [numpy_helper.from_array(blob.b, "B"), numpy_helper.from_array(blob.scales, "S")]
    names = ["A", "B", "S"]
    if blob.zero_points is not None:
        inits.append(numpy_helper.from_array(blob.zero_points, "Z"))
        names.append("Z")
    node = helper.make_node("MatMulNBits", names, ["Y"], domain="com.microsoft",
                            accuracy_level=accuracy_level, **blob.attrs())
    sess = _session([node], [helper.make_tensor_value_info("A", TensorProto.FLOAT, a.shape)],
                    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [a.shape[0], blob.n])],
                    inits)
    return sess.run(None, {"A": a})[0]


def _fp32_bound(a: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Allowed |difference| of two fp32 evaluations of a @ w that differ in summation order:
    rtol 1e-5 of the result plus 1e-5 of sum_k |a_mk w_kn|."""
    return 1e-5 * np.abs(y) + 1e-5 * (np.abs(a).astype(np.float64) @ np.abs(w))


def _case(k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((k, n)).astype(np.float32),
            rng.standard_normal((5, k)).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# MatMulNBits against onnxruntime


@pytest.mark.ort
@pytest.mark.parametrize("bits", P.MATMULNBITS_BITS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k,n,block", SHAPES)
def test_matmulnbits_blob_runs_in_onnxruntime_as_a_times_dequantised_w(
        bits: int, symmetric: bool, k: int, n: int, block: int) -> None:
    w, a = _case(k, n, bits * k)
    blob = P.pack_matmulnbits(w, bits, block, symmetric=symmetric)
    assert blob.b.shape == (n, -(-k // block), block * bits // 8)
    assert (blob.zero_points is None) == symmetric
    wq = Q.fake_quant_weight(w, bits, "per_block", axis=1, block_size=block, symmetric=symmetric)
    ref = a.astype(np.float64) @ wq.astype(np.float64)
    for level in (0, 1):  # fp32 compute: only the summation order differs
        y = _ort_matmulnbits(a, blob, level)
        assert np.all(np.abs(y - ref) <= _fp32_bound(a, wq, ref))
    # accuracy_level 4 quantises A to int8 per block: documented tolerance 2% of max|Y|
    y4 = _ort_matmulnbits(a, blob, 4)
    assert np.max(np.abs(y4 - ref)) <= 2e-2 * np.max(np.abs(ref))


@pytest.mark.ort
@pytest.mark.parametrize("bits", P.MATMULNBITS_BITS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k,n,block", SHAPES)
def test_packed_gemm_equals_onnxruntime_on_the_same_bytes(bits: int, symmetric: bool, k: int,
                                                          n: int, block: int) -> None:
    w, a = _case(k, n, bits + k)
    blob = P.pack_matmulnbits(w, bits, block, symmetric=symmetric)
    y = _ort_matmulnbits(a, blob, 0)
    ours = P.packed_gemm_matmulnbits(a, blob)
    assert ours.dtype == np.float32 and ours.shape == (5, n)
    assert np.all(np.abs(ours - y) <= _fp32_bound(a, P.dequantize_matmulnbits(blob), y))


def _ort_quantised_blob(w: np.ndarray, bits: int, block: int,
                        symmetric: bool) -> P.MatMulNBitsBlob:
    """onnxruntime's own MatMulNBits quantiser (as matmul_nbits_quantizer calls it)."""
    k, n = w.shape
    k_blocks, per = -(-k // block), 8 // bits
    padded = np.pad(w, ((0, k_blocks * block - k), (0, 0)))
    b = np.zeros((n, k_blocks, block * bits // 8), np.uint8)
    scales = np.zeros((n, k_blocks), np.float32)
    zps = np.zeros((n, -(-k_blocks // per)), np.uint8)
    ORT_QUANTIZE[bits](b, padded, scales, zps, block, n, k, symmetric)
    return P.MatMulNBitsBlob(b, scales, None if symmetric else zps, k, n, bits, block)


@pytest.mark.ort
@pytest.mark.parametrize("bits", P.MATMULNBITS_BITS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_onnxruntime_quantiser_blob_unpacks_and_repacks_byte_for_byte(bits: int,
                                                                      symmetric: bool) -> None:
    k, n, block = 100, 6, 32
    w, a = _case(k, n, 7 * bits)
    ort_blob = _ort_quantised_blob(w, bits, block, symmetric)
    # Our reading of onnxruntime's bytes computes what its kernel computes.
    w_ours = P.dequantize_matmulnbits(ort_blob)
    y = _ort_matmulnbits(a, ort_blob, 0)
    assert np.all(np.abs(a.astype(np.float64) @ w_ours - y) <= _fp32_bound(a, w_ours, y))
    # Our packer lays the same codes out in the same bytes (the bytes that hold the K real
    # elements: onnxruntime leaves the padding 0, we fill it with the zero point).
    codes, zps = P.unpack_matmulnbits(ort_blob)
    ours = P.pack_matmulnbits_codes(codes, ort_blob.scales, None if symmetric else zps, bits,
                                    block)
    real_bytes = k * bits // 8  # 100 elements fill whole bytes at 2, 4 and 8 bits
    np.testing.assert_array_equal(ours.b.reshape(n, -1)[:, :real_bytes],
                                  ort_blob.b.reshape(n, -1)[:, :real_bytes])
    if not symmetric:
        np.testing.assert_array_equal(ours.zero_points, ort_blob.zero_points)


def test_matmulnbits_bytes_follow_the_documented_layout() -> None:
    """Row n holds column n of W; 4-bit element 2i is in bits 0-3, 2i+1 in bits 4-7."""
    k, n, block = 40, 3, 16
    codes = np.random.default_rng(0).integers(0, 16, (k, n))
    zps = np.random.default_rng(1).integers(0, 16, (n, 3))
    blob = P.pack_matmulnbits_codes(codes, np.ones((n, 3), np.float32), zps, 4, block)
    padded = np.concatenate([codes.T, np.repeat(zps[:, 2:], 8, axis=1)], axis=1)  # 40 -> 48
    expected = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)
    np.testing.assert_array_equal(blob.b.reshape(n, -1), expected)
    zp_pad = np.concatenate([zps, np.zeros((n, 1), int)], axis=1)
    np.testing.assert_array_equal(blob.zero_points, zp_pad[:, 0::2] | (zp_pad[:, 1::2] << 4))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from(P.MATMULNBITS_BITS),
       k=st.integers(1, 150), n=st.integers(1, 5), block=st.sampled_from([16, 32, 64]),
       with_zp=st.booleans())
def test_matmulnbits_round_trip(seed: int, bits: int, k: int, n: int, block: int,
                                with_zp: bool) -> None:
    rng = np.random.default_rng(seed)
    k_blocks = -(-k // block)
    codes = rng.integers(0, 2**bits, (k, n)).astype(np.uint8)
    zps = rng.integers(0, 2**bits, (n, k_blocks)).astype(np.uint8) if with_zp else None
    blob = P.pack_matmulnbits_codes(codes, np.ones((n, k_blocks), np.float32), zps, bits, block)
    got_codes, got_zps = P.unpack_matmulnbits(blob)
    np.testing.assert_array_equal(got_codes, codes)
    np.testing.assert_array_equal(got_zps, zps if with_zp else 2 ** (bits - 1))


@pytest.mark.parametrize("call,what", [
    (lambda: P.pack_matmulnbits(np.ones((32, 2), np.float32), 3, 32), "bits"),
    (lambda: P.pack_matmulnbits(np.ones((32, 2), np.float32), 4, 24), "block_size"),
    (lambda: P.pack_matmulnbits_codes(np.full((32, 2), 16), np.ones((2, 1)), None, 4, 32),
     "codes"),
    (lambda: P.pack_matmulnbits_codes(np.ones((32, 2)), np.ones((2, 2)), None, 4, 32),
     "scales"),
    (lambda: P.packed_gemm_matmulnbits(np.ones((1, 31), np.float32),
                                       P.pack_matmulnbits(np.ones((32, 2), np.float32), 4, 32)),
     "expected"),
])
def test_bad_matmulnbits_arguments_raise_model_error(call: callable, what: str) -> None:
    with pytest.raises(ModelError, match=what):
        call()


# ----------------------------------------------------------------------------------------------
# ONNX INT4 / UINT4


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.lists(st.integers(1, 7), min_size=1, max_size=3),
       signed=st.booleans())
def test_int4_raw_reads_back_through_onnx(seed: int, shape: list[int], signed: bool) -> None:
    lo, hi = (-8, 7) if signed else (0, 15)
    values = np.random.default_rng(seed).integers(lo, hi + 1, shape)
    raw = P.int4_raw(values, signed)
    assert len(raw.raw) == -(-values.size // 2)
    tensor = helper.make_tensor("w", getattr(TensorProto, raw.data_type_name), raw.dims,
                                raw.raw, raw=True)
    np.testing.assert_array_equal(numpy_helper.to_array(tensor), values)
    back = P.unpack_int4(np.frombuffer(raw.raw, np.uint8), values.size, signed)
    np.testing.assert_array_equal(back.reshape(shape), values)


def test_int4_pairs_put_the_first_element_in_the_low_nibble() -> None:
    np.testing.assert_array_equal(P.pack_int4(np.array([1, 2, 3]), False), [0x21, 0x03])
    np.testing.assert_array_equal(P.pack_int4(np.array([-1, 7, -8]), True), [0x7F, 0x08])
    with pytest.raises(ModelError, match="int4"):
        P.pack_int4(np.array([8]), True)


@pytest.mark.ort
@pytest.mark.parametrize("symmetric", [True, False])
def test_blocked_int4_dequantize_linear_equals_our_dequantize(symmetric: bool) -> None:
    """A conv weight quantised per block along input channels, stored as ONNX INT4/UINT4 and
    dequantised by onnxruntime's blocked DequantizeLinear, gives exactly our reals."""
    w = np.random.default_rng(9).standard_normal((4, 40, 3, 3)).astype(np.float32)
    qt = Q.quantize_weight(w, 4, "per_block", axis=0, block_size=16, symmetric=symmetric)
    codes, zp = P.int4_raw(qt.q, symmetric), P.int4_raw(qt.zero_point, symmetric)
    onnx_type = getattr(TensorProto, codes.data_type_name)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=qt.params.axis,
                            block_size=16)
    sess = _session([node], [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, w.shape)],
                    [helper.make_tensor("q", onnx_type, codes.dims, codes.raw, raw=True),
                     numpy_helper.from_array(qt.scale, "s"),
                     helper.make_tensor("z", onnx_type, zp.dims, zp.raw, raw=True)])
    np.testing.assert_array_equal(sess.run(None, {})[0], Q.dequantize(qt))


# ----------------------------------------------------------------------------------------------
# NEON split-lane interleave


def _neon_diagram(codes: np.ndarray, bits: int, lane_bytes: int) -> np.ndarray:
    """The docstring's diagram, element by element: e -> byte e % lane, slot e // lane."""
    group = lane_bytes * 8 // bits
    rows, length = codes.shape
    out = np.zeros((rows, -(-length // group), lane_bytes), np.uint8)
    for r in range(rows):
        for i in range(length):
            e = i % group
            out[r, i // group, e % lane_bytes] |= codes[r, i] << ((e // lane_bytes) * bits)
    return out


def _mlas_sub_block_shuffle(b: np.ndarray, sub_block: int) -> np.ndarray:
    """onnxruntime's ARM64 4-bit repack as its source describes it (SQ4BitGemmPackQuantBData):
    per sub-block, dst0 = lo(src[i]) | lo(src[i + half]) << 4, dst1 = hi(src[i]) | hi(...)."""
    data = sub_block // 2
    src = b.reshape(-1, data)
    s0, s1 = src[:, : data // 2], src[:, data // 2:]
    dst = np.empty_like(src)
    dst[:, 0::2] = (s0 & 0x0F) | ((s1 & 0x0F) << 4)
    dst[:, 1::2] = (s0 >> 4) | ((s1 >> 4) << 4)
    return dst.reshape(b.shape)


@pytest.mark.parametrize("bits,lane", [(2, 16), (4, 16), (4, 8), (8, 16)])
def test_neon_layout_matches_its_diagram(bits: int, lane: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 2**bits, (3, 150)).astype(np.uint8)
    np.testing.assert_array_equal(PN.pack_neon(codes, bits, lane), _neon_diagram(codes, bits, lane))


@pytest.mark.parametrize("lane", [16, 8])
def test_neon_layout_equals_onnxruntime_arm64_repacking(lane: int) -> None:
    w = np.random.default_rng(lane).standard_normal((128, 4)).astype(np.float32)
    blob = P.pack_matmulnbits(w, 4, 64, symmetric=False)
    expected = _mlas_sub_block_shuffle(blob.b, sub_block=2 * lane)
    np.testing.assert_array_equal(PN.neon_from_matmulnbits(blob, lane), expected)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from(P.MATMULNBITS_BITS),
       rows=st.integers(1, 4), length=st.integers(1, 200), lane=st.sampled_from([8, 16]))
def test_neon_round_trip(seed: int, bits: int, rows: int, length: int, lane: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 2**bits, (rows, length)).astype(np.uint8)
    packed = PN.pack_neon(codes, bits, lane)
    assert packed.shape == (rows, -(-length // PN.neon_group(bits, lane)), lane)
    np.testing.assert_array_equal(PN.unpack_neon(packed, bits, length), codes)


@pytest.mark.parametrize("symmetric", [True, False])
def test_neon_sidecar_round_trips_atomically(tmp_path, symmetric: bool) -> None:  # noqa: ANN001
    w = np.random.default_rng(1).standard_normal((100, 6)).astype(np.float32)
    blob = P.pack_matmulnbits(w, 4, 32, symmetric=symmetric)
    path = PN.write_neon_sidecar(tmp_path / "fc.neon.npz", blob)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.neon.npz"]  # no temp file left
    back = PN.read_neon_sidecar(path)
    for field in ("b", "scales", "zero_points", "k", "n", "bits", "block_size"):
        np.testing.assert_array_equal(getattr(back, field), getattr(blob, field))
    with pytest.raises(ModelError, match="block_size"):
        PN.write_neon_sidecar(tmp_path / "x.npz", P.pack_matmulnbits(w, 4, 16))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       signed=st.booleans())
def test_onnx_int4_packing_is_bytes_identical_to_ours(seed: int, shape: list[int],
                                                      signed: bool) -> None:
    """The emitter lets onnx pack INT4/UINT4 initializers (numpy_helper over ml_dtypes); the
    bytes equal our packing kernel's, odd counts and sign nibbles included."""
    import ml_dtypes

    lo, hi = (-8, 7) if signed else (0, 15)
    values = np.random.default_rng(seed).integers(lo, hi + 1, shape)
    tensor = numpy_helper.from_array(values.astype(ml_dtypes.int4 if signed else ml_dtypes.uint4))
    assert tensor.data_type == (TensorProto.INT4 if signed else TensorProto.UINT4)
    assert tensor.raw_data == P.int4_raw(values, signed).raw
