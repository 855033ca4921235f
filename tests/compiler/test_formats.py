"""The format policy (compiler/formats.py): every row has a quantizer, a fake-quant rule, an
emitter, a cost path on every target kind; quantize and the cost models resolve the same row;
the numbers once duplicated across modules are defined only there."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from compiler import fake_quant, formats
from compiler.emit import EMITTERS, emit
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quant_rows import PLANNERS
from compiler.passes.quantize import QuantOptions, quantize
from edgesim import assignment, zoo
from edgesim.simulation import simulate_graph
from hwmodels import cpu
from hwmodels.cost import evaluate
from hwmodels.target import load_target
from tests.compiler.emit_cases import CONV, f32, one_layer, ort_run, w_, x_

ROOT = Path(__file__).resolve().parents[2]
TARGETS = [load_target(ROOT / "targets" / f"{n}.yaml")
           for n in ("rpi5", "rpi4", "cortex-m7", "systolic-16x16")]
CONVT = dict(strides=(2, 2), pads=(0, 1, 1, 0), dilations=(1, 1), group=1, output_padding=(1, 0))
LAYERS = {
    "conv": ("conv", CONV, [x_(1, 40, 7, 6), w_("w", f32(6, 40, 3, 3)), w_("b", f32(6))]),
    "conv_transpose": ("conv_transpose", CONVT,
                       [x_(1, 3, 4, 4), w_("w", f32(3, 2, 3, 3)), w_("b", f32(2))]),
    "linear": ("linear", {}, [x_(2, 3, 64), w_("w", f32(16, 64)), w_("b", f32(16))]),
    "matmul": ("matmul", {}, [x_(2, 3, 8), ("z", f32(2, 8, 5), False)]),
    "gather": ("gather", {"axis": 0}, [w_("t", f32(40, 64)),
                                       ("i", np.array([[1, 7, 39]], np.int64), False)]),
}
# One case per row: (layer, bits, quantize options) that the policy resolves to that row.
CASES = {
    "float": ("conv", (32, 32), {}),
    "fp16": ("linear", (16, 32), {}),
    "qlinear_conv": ("conv", (8, 8), {}),
    "int8_linear": ("linear", (8, 8), {}),
    "int8_act_matmul": ("matmul", (32, 8), {"act_matmul": "int8"}),
    "qdq_float": ("linear", (8, 4), {}),
    "qdq_float_transpose": ("conv_transpose", (8, 8), {}),
    "nbits_fp32": ("linear", (4, 32), {}),
    "nbits_int8": ("linear", (4, 8), {}),
    "nbits_float_zp": ("linear", (4, 32), {"nbits_float_zp": True}),
    "int_dq": ("conv", (4, 32), {}),
    "int_dq_block": ("conv", (4, 32), {"granularity": "per_block", "block": 16}),
    "gbq": ("gather", (4, 32), {}),
    "dynamic_int8_linear": ("linear", (8, 8), {"dynamic_int8": True}),
    "dynamic_int8_conv": ("conv", (8, 8), {"dynamic_int8": True}),
    "qlinear_linear": ("linear", (8, 8), {"requant_out": True}),
    "qlinear_act_matmul": ("matmul", (32, 8), {"requant_out": True, "act_matmul": "int8"}),
}


def test_every_row_has_a_case() -> None:
    assert set(CASES) == set(formats.BY_NAME)


@pytest.mark.parametrize("name", list(CASES))
def test_row_has_quantizer_fake_quant_emitter_and_cost_path(name: str) -> None:
    row = formats.BY_NAME[name]
    assert name in PLANNERS
    assert name == "float" or name in fake_quant.RULES
    assert all((kind, row.fmt) in EMITTERS for kind in row.kinds)
    assert name in cpu.ROW_PATH


def _quantized(name: str):
    layer, bits, opts = CASES[name]
    g, feeds = one_layer(*LAYERS[layer])
    calib = calibrate(g, [feeds]) if bits[1] < 32 else None
    return g, feeds, quantize(g, np.array([bits]), calib, QuantOptions(clip="minmax", **opts))


@pytest.mark.parametrize("name", list(CASES))
def test_quantize_emits_the_row_and_onnxruntime_computes_its_simulation(name: str) -> None:
    g, feeds, q = _quantized(name)
    assert q.layer_table().fmt_code.tolist() == [formats.FORMAT_CODE[name]]
    sim, got = run(q, feeds, fake_quant=True)["y0"], ort_run(emit(q), feeds)["y0"]
    np.testing.assert_allclose(got, sim, rtol=1e-5, atol=1e-5 * np.abs(sim).max())


@pytest.mark.parametrize("name", [n for n, (_, _, o) in CASES.items() if not o])
def test_cost_model_resolves_the_row_quantize_writes(name: str) -> None:
    """With default options, the CPU cost model on the float model's table picks the very row
    the quantize pass writes (on a target with int8 dot products, rpi5)."""
    layer, bits, _ = CASES[name]
    g, _ = one_layer(*LAYERS[layer])
    codes = cpu.format_codes(g.layer_table(), np.array([bits]), TARGETS[0])
    assert codes.tolist() == [[formats.FORMAT_CODE[name]]]


def test_without_int8_dot_products_w4a8_linear_runs_weight_only() -> None:
    """rpi4 (Cortex-A72, no dotprod): no CompInt8 kernel, so (4, 8) is MatMulNBits in fp32."""
    g, _ = one_layer(*LAYERS["linear"])
    codes = cpu.format_codes(g.layer_table(), np.array([(4, 8)]), TARGETS[1])
    assert codes.tolist() == [[formats.FORMAT_CODE["nbits_fp32"]]]
    q = quantize(g, np.array([(4, 8)]), None, QuantOptions(int8_dot=False))
    assert q.layer_table().fmt_code.tolist() == [formats.FORMAT_CODE["nbits_fp32"]]


@pytest.mark.parametrize("name", list(CASES))
def test_every_row_has_a_cost_on_every_target_kind(name: str) -> None:
    _, _, q = _quantized(name)
    bits = np.array([CASES[name][1]])
    for target in TARGETS:
        cost = evaluate(q.layer_table(), bits, target)  # inf: the target cannot run it
        assert (cost.latency_s > 0).all(), target.name


def test_simulate_and_quantize_cost_attention_matmuls_alike() -> None:
    """`simulate --bits 8` (float table + bits) and the quantized model's own table (planned
    rows) give the same per-layer latency: attention matmuls stay float in both."""
    g = load(zoo.build("digits_transformer"))
    bits = assignment.uniform(g, 8)
    calib = calibrate(g, [{"input": zoo.load_digits_data()["x_calib"][:1]}])
    q = quantize(g, bits, calib)
    for target in TARGETS[:2]:
        planned = [r.latency_ms for r in simulate_graph(q, target, bits).layers]
        predicted = [r.latency_ms for r in simulate_graph(g, target, bits).layers]
        assert planned == predicted
    matmuls = [i for i, layer in enumerate(g.layers) if layer.kind == "matmul"]
    codes = cpu.format_codes(g.layer_table(), bits[:1], TARGETS[0])[matmuls, 0]
    assert set(codes.tolist()) == {formats.FORMAT_CODE["float"]}


ONCE = ("WEIGHT_BITS", "ACT_BITS", "NBITS_BLOCK", "MATMULNBITS_BITS", "WEIGHT_INPUT",
        "CHANNEL_AXIS", "ACT_INPUTS", "QUANT_FORMATS")


def test_policy_numbers_are_defined_once() -> None:
    """Legal widths, the MatMulNBits block and weight slots are assigned only in formats.py."""
    found = []
    for package in ("compiler", "hwmodels", "edgesim"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                targets = node.targets if isinstance(node, ast.Assign) else [
                    node.target] if isinstance(node, ast.AnnAssign) else []
                found += [f"{path.relative_to(ROOT)}:{t.id}" for t in targets
                          if isinstance(t, ast.Name) and t.id in ONCE]
    assert sorted(found) == sorted(f"compiler/formats.py:{n}" for n in ONCE[:-1])


@pytest.mark.ort
@pytest.mark.parametrize("model", ["digits_cnn", "digits_transformer"])
@pytest.mark.parametrize("bits", [(4, 4), (2, 4), (8, 4)])
def test_four_bit_activations_load_and_run_in_float_as_planned(model: str,
                                                               bits: tuple[int, int]) -> None:
    """Whole models at 4-bit activations (the grid around Conv -> Relu -> MaxPool chains that
    onnxruntime's QDQ selectors fused into QLinearConv/MaxPool on uint4 and then refused):
    the emitted model loads with default session options, computes the fake-quant
    simulation, and every layer runs the kernel its row names (fp32: no integer kernel)."""
    from edgesim.kernel_check import check_kernels  # noqa: PLC0415

    g = load(zoo.build(model), {"input": (3, 1, 8, 8)})
    x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    calib = calibrate(g, [{g.inputs[0]: x}])
    plan = np.array([bits if layer.kind in formats.GEMM_KINDS else (32, 32)
                     for layer in g.layers])
    q = quantize(g, plan, calib)
    assert {formats.FORMATS[c].name for c in q.layer_table().fmt_code} >= {"qdq_float"}
    model_proto = emit(q)
    sim = run(q, {g.inputs[0]: x}, fake_quant=True)[g.outputs[0]]
    got = ort_run(model_proto, {g.inputs[0]: x})[g.outputs[0]]
    np.testing.assert_allclose(got, sim, rtol=1e-5, atol=1e-5 * np.abs(sim).max())
    rows = check_kernels(q, model_proto)
    assert rows and all(r.ok for r in rows), rows
