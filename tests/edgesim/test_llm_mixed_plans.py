"""Mixed weight-format plans for decoders (issue 14): the HAWQ objective against the closed
form of a quadratic loss and onnxruntime's MatMulNBits outputs, the weight layout it is priced
in, the exact knapsack against brute force, and the size budgets and references of
bench/bench_llm_quality.py."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.linalg import hadamard

from compiler.frontend import load
from compiler.packing import pack_matmulnbits
from edgesim.errors import UserError
from edgesim.llm.formats import candidate_formats, parse_format
from edgesim.llm.plan import avg_bits_bytes, fill_plan, plan_bytes, plan_for_bytes
from edgesim.llm.sensitivity import (
    calibration_graph,
    format_error,
    format_sensitivity,
    layer_scores,
)
from edgesim.zoo.decoder import DecoderShape, kv_decoder, linear_names
from tests.compiler.opcheck import run_ort

K = 64   # in = out features of the quadratic case; a Hadamard matrix's order


def _matmul_model(w: np.ndarray, fmt: str) -> onnx.ModelProto:
    """y [N, 1, K] = x [N, 1, K] @ w, float or MatMulNBits in `fmt` (accuracy_level 0)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, K])
    f = parse_format(fmt)
    if not f.quantized:
        node = helper.make_node("MatMul", ["x", "mm.weight"], ["y"], name="mm")
        inits = [numpy_helper.from_array(w.astype(np.float32), "mm.weight")]
    else:
        blob = pack_matmulnbits(w.astype(np.float32), f.bits, f.block,
                                symmetric=not f.zero_point)
        inits = [numpy_helper.from_array(blob.b, "B"), numpy_helper.from_array(blob.scales, "S")]
        ins = ["x", "B", "S"]
        if blob.zero_points is not None:
            inits.append(numpy_helper.from_array(blob.zero_points, "Z"))
            ins.append("Z")
        node = helper.make_node("MatMulNBits", ins, ["y"], name="mm", domain="com.microsoft",
                                **blob.attrs())
    graph = helper.make_graph([node], "mm", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("fmt", ["q2z", "q4", "q4b64z", "q8b128"])
def test_hawq_objective_is_the_second_order_taylor_term_of_a_quadratic(fmt: str) -> None:
    """L(W) = (1/N) sum_r ||x_r W - x_r W0||^2 (the default loss of a 3-D output: MSE to the
    float model) is quadratic, so L(W0 + D) = D^T H D / 2 exactly; with Hadamard inputs
    (X^T X = N I) H is isotropic and Tr(H)/n * ||D||^2 / 2 is that exact rise. D is the
    MatMulNBits round trip of W0, measured as onnxruntime's output change."""
    w = np.random.default_rng(4).standard_normal((K, K)).astype(np.float32)
    xs = hadamard(K).astype(np.float32)[:, None, :]
    g = load(_matmul_model(w, "fp32"), {"x": [1, 1, K]})
    omega = format_sensitivity(g, layer_scores(g, {"x": xs}, "hawq"), ["mm"], [fmt])[0, 0]
    y0 = run_ort(_matmul_model(w, "fp32"), {"x": xs})[0].astype(np.float64)
    yq = run_ort(_matmul_model(w, fmt), {"x": xs})[0].astype(np.float64)
    rise = float(((yq - y0) ** 2).sum() / K)
    assert omega / 2 == pytest.approx(rise, rel=1e-3)


def test_linear_weights_are_priced_blocked_along_their_inputs() -> None:
    """The IR stores a linear's weight [out, in]; the harm must be the error of MatMulNBits'
    blocks along K of the ONNX MatMul's B [in, out] (the initializer), not along outputs."""
    shape = DecoderShape(vocab=48, hidden=64, layers=1, heads=4, kv_heads=2, intermediate=96,
                         max_context=64)
    model = kv_decoder(shape, seed=3)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    g = calibration_graph(model, seq=4)
    names = [n for n in linear_names(shape) if f"{n}.weight" in inits]
    keys = {k: 1.0 for k in g.weights if k.endswith("/MatMul.weight")}
    fmts = ["q4", "q2z", "q4b64z"]
    got = format_sensitivity(g, keys, names, fmts)
    want = [[format_error(inits[f"{n}.weight"].astype(np.float64), f) for f in fmts]
            for n in names]
    assert len(names) == 8   # 7 per block and the head
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_plan_for_bytes_is_the_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    choices = ["q2z", "q4b128z", "q4", "q8b128"]
    names = [f"l{i}" for i in range(5)]
    params = dict(zip(names, (int(p) * 32 for p in rng.integers(2, 40, 5))))
    sens = rng.random((5, 4)) * np.array([8.0, 3.0, 2.0, 0.5])   # more bits, less harm
    lo, hi = (plan_bytes(dict.fromkeys(names, c), params) for c in ("q2z", "q8b128"))
    limit = lo + rng.random() * (hi - lo)
    plan = plan_for_bytes(sens, list(params.values()), names, choices, limit)
    best = min((sum(sens[i, c] for i, c in enumerate(combo)), combo)
               for combo in itertools.product(range(4), repeat=5)
               if plan_bytes({n: choices[c] for n, c in zip(names, combo)}, params) <= limit)
    got = sum(sens[i, choices.index(plan[n])] for i, n in enumerate(names))
    assert plan_bytes(plan, params) <= limit
    assert got == pytest.approx(best[0], rel=1e-9)


def test_avg_bits_bytes_interpolates_the_uniform_formats() -> None:
    params = {"a": 64 * 64, "b": 64 * 192}
    n = sum(params.values())
    q4, q2z, q8 = n * (0.5 + 4 / 32), n * (0.25 + (4 + 0.25) / 32), n * (1 + 4 / 32)
    assert avg_bits_bytes(params, 4) == pytest.approx(q4)
    assert avg_bits_bytes(params, 3) == pytest.approx((q2z + q4) / 2)
    assert avg_bits_bytes(params, 6) == pytest.approx((q4 + q8) / 2)
    with pytest.raises(UserError, match="1.5 bits"):
        avg_bits_bytes(params, 1.5)


def test_fill_plan_fits_and_cannot_take_another_layer_high() -> None:
    params = {f"l{i}": s for i, s in enumerate((4096, 12288, 2048, 12288, 4096))}
    limit = avg_bits_bytes(params, 3)
    plan = fill_plan(params, list(params)[::-1], "q2z", "q4", limit)
    assert plan_bytes(plan, params) <= limit
    assert set(plan.values()) == {"q2z", "q4"}
    for n in (n for n in params if plan[n] == "q2z"):
        assert plan_bytes(plan | {n: "q4"}, params) > limit
    with pytest.raises(UserError, match="uniform q2z"):
        fill_plan(params, list(params), "q2z", "q4", 10.0)


def test_candidate_formats_cover_bits_blocks_and_zero_points() -> None:
    fmts = candidate_formats()
    assert len(set(fmts)) == 18
    specs = {(f.bits, f.block, f.zero_point) for f in map(parse_format, fmts)}
    assert specs == set(itertools.product((2, 4, 8), (32, 64, 128), (False, True)))
    assert parse_format("q4b128z").bytes_per_weight() == 0.5 + (4 + 0.5) / 128
