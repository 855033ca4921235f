"""Reading quantized ONNX (compiler/frontend/quantized.py) and simulating it.

(a) edgesim's own W8A8, W4 and mixed outputs read back to the plan they were emitted from, and
`simulate` on them predicts the same per-layer cost as the plan from the float model;
(b) onnxruntime's quantize_static (QDQ) and MatMulNBitsQuantizer outputs read back to layers
whose planned kernels are the ones onnxruntime runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.emit import emit
from compiler.frontend import load
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from edgesim import api, assignment, zoo
from edgesim.kernel_check import check_kernels

pytestmark = pytest.mark.ort
ROOT = Path(__file__).resolve().parents[2]
MODELS = {"digits_cnn": {}, "digits_transformer": {}, "mobilenet_v2": {"resolution": 32},
          "minilm": {"seq": 16, "depth": 1}}


def _plan(g, plan: str) -> np.ndarray:
    if plan not in ("mixed", "w4-after-int8"):
        return assignment.uniform(g, int(plan))
    bits = assignment.uniform(g, 8)
    macs = [i for i, la in enumerate(g.layers) if la.kind in ("conv", "linear")]
    if plan == "mixed":
        bits[macs[1::3]] = 32
        bits[macs[2::3]] = (4, 32)
    else:  # weight-only layers reading an int8 layer's requantised output
        bits[macs[1::2]] = (4, 32)
    return bits


def _calib(g):
    rng = np.random.default_rng(0)
    feed = {t: rng.standard_normal(g.types[t].shape).astype(np.float32)
            if g.types[t].dtype == "float32" else
            rng.integers(0, 100, g.types[t].shape).astype(g.types[t].dtype) for t in g.inputs}
    return calibrate(g, [feed])


@pytest.mark.parametrize("plan", ["8", "4", "mixed", "w4-after-int8"])
@pytest.mark.parametrize("name", list(MODELS))
def test_own_outputs_read_back_to_their_plan_and_cost(name: str, plan: str) -> None:
    """... and to the kernels onnxruntime's optimised graph runs (`check_kernels`): a
    weight-only layer after an int8 one runs in fp32 although its input is a
    DequantizeLinear."""
    source = zoo.build(name, **MODELS[name])
    g = load(source)
    bits = _plan(g, plan)
    q = quantize(g, bits, _calib(g), QuantOptions(clip="minmax"))
    model = emit(q)
    back = load(model)
    assert all(r.ok for r in check_kernels(back, model))
    planned = {la.name: (la.quant.fmt, la.quant.w_bits, la.quant.a_bits, la.quant.block)
               for la in q.layers if KIND_CATEGORY[la.kind] == CATEGORY_GEMM}
    read = {la.name: (la.quant.fmt, la.quant.w_bits, la.quant.a_bits, la.quant.block)
            for la in back.layers if la.name in planned}
    assert read == planned
    for target in ("rpi5", "rpi4"):
        ours = {r.name: r.latency_ms for r in api.simulate(g, target, bits=bits).layers}
        theirs = {r.name: r.latency_ms for r in api.simulate(back, target).layers}
        for layer in planned:
            assert theirs[layer] == pytest.approx(ours[layer], rel=1e-9), (target, layer)


def _static_qdq(tmp_path: Path, name: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    src, out = tmp_path / "f.onnx", tmp_path / "qdq.onnx"
    onnx.save(zoo.build(name, **MODELS[name]), src)
    data = zoo.load_digits_data()["x_calib"][:4]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": data[i:i + 1]} for i in range(len(data))])

        def get_next(self) -> dict | None:
            return next(self.it, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "Gemm", "MatMul"], per_channel=True)
    return out


def _nbits(tmp_path: Path, name: str, accuracy_level: int) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = zoo.build(name, **MODELS[name])
    qz = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True,
                              accuracy_level=accuracy_level)
    qz.process()
    out = tmp_path / "nbits.onnx"
    onnx.save(qz.model.model, out)
    return out


def _rows(path: Path):
    g = load(path)
    return g, check_kernels(g, onnx.load(path))


# integer / float GEMM layers onnxruntime runs for quantize_static's QDQ output (its
# optimised graph is the oracle check_kernels compares with): digits_cnn's 3 convs and Gemm;
# digits_transformer's q / k / v MatMuls share one DequantizeLinear and stay float in both
# blocks, the other 12 run as integer kernels
STATIC_QDQ_KERNELS = {"digits_cnn": (4, 0), "digits_transformer": (12, 6)}


@pytest.mark.parametrize("name", list(STATIC_QDQ_KERNELS))
def test_quantize_static_qdq_reads_as_the_kernels_onnxruntime_runs(tmp_path, name: str) -> None:
    """QDQ convs run as QLinearConv, MatMul / Gemm with a requantised output as QLinearMatMul
    / QGemm; a MatMul whose input DequantizeLinear feeds several consumers runs in fp32."""
    g, rows = _rows(_static_qdq(tmp_path, name))
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    integer = [r for r in rows if r.planned in ("QLinearConv", "QLinearMatMul")]
    floats = [r for r in rows if r.planned == "fp32"]
    assert (len(integer), len(floats)) == STATIC_QDQ_KERNELS[name], rows
    sim = {r.name: r for r in api.simulate(g, "rpi5").layers}
    assert all(sim[r.layer].a_bits == 8 for r in integer)
    assert all(sim[r.layer].a_bits == 32 for r in floats)


@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_matmulnbits_quantizer_output_reads_as_its_kernel(tmp_path, accuracy_level: int
                                                          ) -> None:
    g, rows = _rows(_nbits(tmp_path, "digits_transformer", accuracy_level))
    nbits = [r for r in rows if r.planned.startswith("MatMulNBits")]
    assert nbits and all(r.ok for r in rows), [r for r in rows if not r.ok]
    assert {r.planned for r in nbits} == {f"MatMulNBits/acc{accuracy_level}"}
    # the cliff: without accuracy_level 4 a dotprod target runs MatMulNBits in fp32
    sim = {r.name: r for r in api.simulate(g, "rpi5").layers}
    assert all(sim[r.layer].w_bits == 4 and sim[r.layer].a_bits == (
        8 if accuracy_level == 4 else 32) for r in nbits)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_quantize_dynamic_output_reads_as_its_kernels(tmp_path, name: str) -> None:
    """quantize_dynamic: ConvInteger convs, DynamicQuantizeMatMul / MatMulIntegerToFloat
    linears, every one read back as W8A8 with run-time activations."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = tmp_path / "f.onnx", tmp_path / "dyn.onnx"
    onnx.save(zoo.build(name), src)
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    g, rows = _rows(out)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    macs = [r for r in rows if r.kind in ("conv", "linear")]
    want = {"conv": "ConvInteger", "linear": "MatMulIntegerToFloat"}
    assert macs and all(r.planned == want[r.kind] for r in macs)
    sim = {r.name: r for r in api.simulate(g, "rpi5").layers}
    assert all((sim[r.layer].w_bits, sim[r.layer].a_bits) == (8, 8) for r in macs)


def test_cli_inspect_and_simulate_read_a_quantized_file(tmp_path) -> None:
    """`edgesim quantize --bits 8`, then `inspect` shows each layer's format and `simulate`
    (no --bits: the file's own plan) predicts what `simulate --bits 8` predicts for the float
    model, layer by layer."""
    import json
    import subprocess
    import sys

    def cli(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "edgesim", *args], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "--json" in args else {}

    out = tmp_path / "q.onnx"
    cli("quantize", "zoo:digits_cnn", "--bits", "8", "--calib-random", "4", "-o", str(out))
    shown = {x["name"]: x["format"] for x in cli("inspect", str(out), "--json")["layers"]}
    assert shown["conv1/Conv"] == "qlinear_conv" and shown["fc/Gemm"] == "int8_linear"
    ours = cli("simulate", str(out), "--target", "rpi5", "--json")
    float_8 = cli("simulate", "zoo:digits_cnn", "--target", "rpi5", "--bits", "8", "--json")
    theirs = {x["name"]: x["latency_ms"] for x in float_8["layers"]}
    for x in ours["layers"]:
        if x["kind"] in ("conv", "linear"):
            assert x["latency_ms"] == pytest.approx(theirs[x["name"]], rel=1e-9)
