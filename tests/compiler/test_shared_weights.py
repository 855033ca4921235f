"""One initializer read by several MatMuls / Convs is one weight: lowered, quantised, emitted
and counted once (ddddocr's unrolled LSTM wrote a W_hh copy per step: a 51.9 MB W8A8 file
from a 54 MB fp32 source, ~40 M of its "params" copies of two 1 M matrices).

Oracles: the emitted file's initializers counted by shape, its size against one int8 tensor
computed by hand, onnxruntime's outputs against the fake-quant simulation of the same graph,
and onnxruntime's optimised graph (the integer kernels it fuses each reader into).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.emit import emit
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quant_bytes import weight_bytes
from compiler.passes.quantize import quantize
from hwmodels.cost import evaluate
from hwmodels.target import load_target
from tests.compiler.test_expand_lstm_directions import lstm_model

K = N = 64  # the shared MatMul weight [K, N]
READERS = 3
C, KS = 8, 3  # the shared conv weight [C, C, KS, KS]


def matmul_chain(readers: int = READERS) -> onnx.ModelProto:
    """X [4, K] -> (MatMul W -> Tanh) x readers, one initializer W [K, N]."""
    w = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    nodes, x = [], "X"
    for i in range(readers):
        nodes += [helper.make_node("MatMul", [x, "W"], [f"y{i}"], name=f"mm{i}"),
                  helper.make_node("Tanh", [f"y{i}"], [f"t{i}"], name=f"tanh{i}")]
        x = f"t{i}"
    graph = helper.make_graph(
        nodes, "shared", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, K])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [4, N])],
        [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv_chain() -> onnx.ModelProto:
    """X [1, C, 8, 8] -> (Conv W -> Relu) x 2, one initializer W [C, C, KS, KS]."""
    w = np.random.default_rng(1).standard_normal((C, C, KS, KS)).astype(np.float32) * 0.2
    nodes, x = [], "X"
    for i in range(2):
        nodes += [helper.make_node("Conv", [x, "W"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    shape = [1, C, 8, 8]
    graph = helper.make_graph(
        nodes, "shared_conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim])
            .astype(np.float32) for vi in model.graph.input}


def _bits(g, w: int, a: int) -> np.ndarray:
    """(w, a) on every conv / linear layer, float elsewhere."""
    return np.array([(w, a) if x.kind in ("linear", "conv") else (32, 32) for x in g.layers])


def _session(model: onnx.ModelProto, optimized: str | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if optimized:
        opts.optimized_model_filepath = optimized
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _quantised(model: onnx.ModelProto, w: int, a: int):
    g = load(model)
    calib = calibrate(g, [_feeds(model, s) for s in range(4)])
    return quantize(g, _bits(g, w, a), calib)


def _big_inits(model: onnx.ModelProto, size: int) -> list[onnx.TensorProto]:
    """Initializers holding at least `size` elements (weights, not scales)."""
    return [t for t in model.graph.initializer if int(np.prod(t.dims)) >= size]


def test_readers_of_one_initializer_lower_to_one_weight() -> None:
    g = load(matmul_chain())
    linear = [x for x in g.layers if x.kind == "linear"]
    assert len(linear) == READERS
    assert len({x.inputs[1] for x in linear}) == 1
    assert [t for t in g.weights if g.weights[t].size == K * N] == [linear[0].inputs[1]]
    np.testing.assert_array_equal(g.weights[linear[0].inputs[1]],
                                  numpy_helper.to_array(matmul_chain().graph.initializer[0]).T)


@pytest.mark.parametrize("w,a", [(8, 8), (4, 32)])
def test_emitted_model_holds_the_weight_once_and_matches_simulation(w: int, a: int) -> None:
    model = matmul_chain()
    q = _quantised(model, w, a)
    out = emit(q)
    big = _big_inits(out, K * N * w // 8 // 2)
    assert len(big) == 1, [(t.name, list(t.dims)) for t in big]
    # one tensor by hand: its codes, and per output channel a float32 scale and a uint8
    # zero point (W8A8) or a float32 scale per block of 32 (MatMulNBits); 3 copies: 3x
    one = K * N + 5 * N if w == 8 else K * N // 2 + N * (K // 32) * 4
    graph = 2048  # nodes, names and the plan's JSON around the weights (~1.1-1.6 kB here)
    assert one < len(out.SerializeToString()) < one + graph < 2 * one
    feeds = _feeds(model, 9)
    sim = run(q, feeds, fake_quant=True)
    got = dict(zip([o.name for o in out.graph.output], _session(out).run(None, feeds)))
    for name in q.outputs:
        np.testing.assert_allclose(got[name], sim[name], rtol=1e-5,
                                   atol=1e-5 * float(np.abs(sim[name]).max()))


def test_w8a8_weight_bytes_are_one_tensor_by_hand() -> None:
    q = _quantised(matmul_chain(), 8, 8)
    # int8 codes + a float32 scale and a uint8 zero point per output channel, once
    assert weight_bytes(q) == K * N + N * 4 + N


def test_shared_conv_weight_is_written_once_and_each_reader_fuses(tmp_path) -> None:
    model = conv_chain()
    q = _quantised(model, 8, 8)
    out = emit(q)
    assert len(_big_inits(out, C * C * KS * KS)) == 1
    path = tmp_path / "opt.onnx"
    sess = _session(out, str(path))
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("QLinearConv") == 2, ops
    feeds = _feeds(model, 9)
    sim = run(q, feeds, fake_quant=True)
    got = sess.run(None, feeds)[0]
    np.testing.assert_array_equal(got, sim[q.outputs[0]])


def test_layer_table_counts_the_shared_weight_once() -> None:
    g = load(matmul_chain())
    table = g.layer_table()
    assert table.w_repeat is not None
    assert table.w_repeat.tolist() == [False, False, True, False, True, False]
    cost = evaluate(table, np.array([[32, 32], [8, 8]]), load_target("rpi5"))
    # fp32: one [K, N] float32 tensor; W8A8: its int8 codes + per-channel scale + zero point
    np.testing.assert_allclose(np.asarray(cost.weight_bytes).sum(axis=0),
                               [K * N * 4, K * N + N * 4 + N])
    lat = np.asarray(cost.latency_s)
    assert (lat[[2, 4]] > 0).all()  # each reader still streams the weight


def test_bidirectional_lstm_emits_each_recurrent_matrix_once() -> None:
    model = lstm_model("bidirectional", states=True)
    r = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["R"]
    g = load(model)
    steps = [x for x in g.layers if x.kind == "linear" and g.types[x.inputs[1]].shape
             == (r.shape[1], r.shape[2])]
    assert len(steps) == 2 * 4  # SEQ steps per direction read R[d]
    assert len({x.inputs[1] for x in steps}) == 2
    calib = calibrate(g, [_feeds(model, s) for s in range(4)])
    q = quantize(g, _bits(g, 8, 8), calib)
    out = emit(q)
    codes = [t for t in out.graph.initializer if sorted(t.dims) == sorted(r.shape[1:])
             and t.data_type in (TensorProto.UINT8, TensorProto.INT8)]
    assert len(codes) == 2, [t.name for t in codes]


def test_gemms_share_a_weight_read_the_same_way_and_match_onnxruntime() -> None:
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "B"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "C")]
    nodes = [helper.make_node("Gemm", ["X", "B", "C"], ["y0"], name="g0", transB=1),
             helper.make_node("Gemm", ["y0", "B", "C"], ["y1"], name="g1", transB=1, beta=0.5),
             helper.make_node("Gemm", ["y1", "B", "C"], ["y2"], name="g2", transB=1),
             helper.make_node("Gemm", ["y2", "B"], ["y3"], name="g3")]
    graph = helper.make_graph(
        nodes, "gemms", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y3", TensorProto.FLOAT, [2, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = load(model)
    w = [x.inputs[1] for x in g.layers]
    # B' is one weight for g0-g2; g3 reads B untransposed: another matrix
    assert w[0] == w[1] == w[2] != w[3]
    # g1's bias is 0.5 C, g2's is g0's C
    assert [len(set(x.inputs[2:])) for x in g.layers[:3]] == [1, 1, 1]
    assert g.layers[2].inputs[2] == g.layers[0].inputs[2] != g.layers[1].inputs[2]
    assert g.layer_table().w_repeat.tolist() == [False, False, True, False]
    feeds = _feeds(model, 3)
    want = _session(model).run(None, feeds)[0]
    np.testing.assert_allclose(run(g, feeds)["y3"], want, rtol=1e-5, atol=1e-5)


def test_shared_conv_weight_at_4_bits_is_one_int4_initializer() -> None:
    model = conv_chain()
    q = _quantised(model, 4, 32)
    out = emit(q)
    codes = [t for t in out.graph.initializer if t.data_type == TensorProto.INT4]
    assert len(codes) == 1 and int(np.prod(codes[0].dims)) == C * C * KS * KS
    feeds = _feeds(model, 9)
    sim = run(q, feeds, fake_quant=True)[q.outputs[0]]
    got = _session(out).run(None, feeds)[0]
    np.testing.assert_allclose(got, sim, rtol=1e-5, atol=1e-5 * float(np.abs(sim).max()))


def gemms_sharing_b_with_own_biases() -> onnx.ModelProto:
    """X [2, K] -> Gemm(B, C0) -> Tanh -> Gemm(B, C1): one B [N, K], two biases."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((N, K)).astype(np.float32), "B"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "C0"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "C1")]
    nodes = [helper.make_node("Gemm", ["X", "B", "C0"], ["y0"], name="g0", transB=1),
             helper.make_node("Tanh", ["y0"], ["t0"], name="tanh0"),
             helper.make_node("Gemm", ["t0", "B", "C1"], ["y1"], name="g1", transB=1)]
    graph = helper.make_graph(
        nodes, "gemms_own_bias", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, K])],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [2, N])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_reader_of_a_shared_weight_with_its_own_bias_stores_only_the_bias() -> None:
    """g1 reads g0's B but its own C1: it was not `w_repeat` (not all its constants are
    shared), so B counted twice. Hand count, and for fp32 the emitted file's initializers."""
    model = gemms_sharing_b_with_own_biases()
    g = load(model)
    table = g.layer_table()
    assert table.w_repeat.tolist() == [False, False, False]
    assert table.w_shared is not None and table.w_shared.tolist() == [False, False, True]
    cost = evaluate(table, np.array([[32, 32], [8, 8]]), load_target("rpi5"))
    stored = np.asarray(cost.weight_bytes).sum(axis=0)
    # fp32: B once and both biases; W8A8 (MatMulIntegerToFloat): B's uint8 codes, a float32
    # scale and a uint8 zero point per output channel once, and both float biases
    np.testing.assert_allclose(stored, [(K * N + 2 * N) * 4, K * N + 5 * N + 2 * N * 4])
    q = quantize(g, np.full((len(g.layers), 2), 32), calibrate(g, [_feeds(model, 0)]))
    written = sum(numpy_helper.to_array(t).nbytes for t in emit(q).graph.initializer)
    assert written == stored[0]
    assert (np.asarray(cost.latency_s)[[0, 2]] > 0).all()  # each reader still streams B


@pytest.mark.parametrize("target", ["cortex-m7", "systolic-16x16", "sparse-mac-32x32"])
def test_mcu_and_mac_arrays_store_a_shared_weight_with_own_bias_once(target: str) -> None:
    """These models count a row's constants at its weight width (B and C alike): at 8 bits,
    B's K x N codes once plus both biases, not B twice (as they did before `w_shared`)."""
    table = load(gemms_sharing_b_with_own_biases()).layer_table()
    cost = evaluate(table, np.array([[8, 8]]), load_target(target))
    np.testing.assert_allclose(np.asarray(cost.weight_bytes).sum(), K * N + 2 * N)


def test_mcu_flash_check_counts_a_shared_weight_with_own_bias_once() -> None:
    from hwmodels.mcu import check_fit

    table = load(gemms_sharing_b_with_own_biases()).layer_table()
    assert check_fit(table, np.array([8, 8]), load_target("cortex-m7")).weight_bytes == (
        K * N + 2 * N)
