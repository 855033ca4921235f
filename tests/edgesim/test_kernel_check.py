"""Kernel check: what onnxruntime runs (its optimised graph) against the plan, per layer.

Zero mismatches on mobilenet_v2, resnet18, minilm and the trained digits models for uniform
8-bit, uniform 4-bit and HAWQ mixed plans on rpi5 and rpi4 (small input shapes, two
calibration samples), and the check catches the mismatches it exists for."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from compiler.emit import EmitOptions, emit
from compiler.frontend import load
from compiler.ir import Graph
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from edgesim import assignment, zoo
from edgesim.allocation import allocate
from edgesim.errors import UserError
from edgesim.kernel_check import FP32, check_kernels, require_match
from hwmodels.cpu import nbits_int8_available
from hwmodels.target import load_target

pytestmark = pytest.mark.ort
ROOT = Path(__file__).resolve().parents[2]
MODELS = {"mobilenet_v2": {"resolution": 32}, "resnet18": {"resolution": 32},
          "minilm": {"seq": 16, "depth": 2}, "digits_cnn": {}, "digits_transformer": {}}
TARGETS = ("rpi5", "rpi4")


@cache
def _model(name: str) -> tuple[Graph, dict, object]:
    g = load(zoo.build(name, **MODELS[name]))
    rng = np.random.default_rng(0)
    feeds = {t: rng.standard_normal((2, *g.types[t].shape[1:])).astype(np.float32)
             if g.types[t].dtype == "float32" else
             rng.integers(0, 100, (2, *g.types[t].shape[1:])).astype(g.types[t].dtype)
             for t in g.inputs}
    calib = calibrate(g, [{t: v[i:i + 1] for t, v in feeds.items()} for i in range(2)])
    return g, feeds, calib


@cache
def _hawq(name: str):
    """HAWQ-V2 sensitivities from one sample and a few probes: a mixed plan, quickly."""
    from compiler.sensitivity.hawq import sensitivity as hawq

    g, feeds, _ = _model(name)
    return hawq(g, {t: v[:1] for t, v in feeds.items()}, tol=0.5, max_iter=4)


def _bits(name: str, plan: str, target) -> np.ndarray:
    g = _model(name)[0]
    if plan == "hawq":
        return allocate(g, target, sens=_hawq(name)).bits
    return assignment.uniform(g, int(plan))


@cache
def _checked(name: str, bits: bytes, int8_dot: bool):
    """Kernel rows of `name` at `bits` (uniform plans are the same on both targets: checked
    once); min/max weight ranges, as the clip search changes no kernel."""
    g, _, calib = _model(name)
    assignment_ = np.frombuffer(bits, np.int64).reshape(-1, 2)
    q = quantize(g, assignment_, calib, QuantOptions(clip="minmax", int8_dot=int8_dot))
    return check_kernels(q, emit(q))


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("plan", ["8", "4", "hawq"])
@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_runs_the_planned_kernel_on_every_layer(name: str, plan: str,
                                                            target_name: str) -> None:
    target = load_target(ROOT / "targets" / f"{target_name}.yaml")
    bits = _bits(name, plan, target)
    rows = _checked(name, bits.tobytes(), nbits_int8_available(target))
    bad = [r for r in rows if not r.ok]
    assert not bad, bad[:5]
    seen = {r.onnxruntime for r in rows}
    if plan == "8":  # the check sees integer kernels (not only an all-float graph)
        assert seen & {"QLinearConv", "MatMulIntegerToFloat"}, seen
    if plan == "4" and any(layer.kind == "linear" for layer in _model(name)[0].layers):
        assert "MatMulNBits/acc0" in seen, seen


def _alternating(g: Graph) -> np.ndarray:
    """W8A8 convs with every other conv float: each float conv sits between a DequantizeLinear
    and a QuantizeLinear (the mixed plans of issue 12)."""
    bits = assignment.uniform(g, 8)
    convs = [i for i, layer in enumerate(g.layers) if layer.kind == "conv"]
    bits[convs[1::2]] = 32
    return bits


def test_float_layers_between_int8_layers_stay_float(monkeypatch) -> None:
    g, _, calib = _model("mobilenet_v2")
    q = quantize(g, _alternating(g), calib, QuantOptions(clip="minmax"))
    rows = check_kernels(q, emit(q))
    assert all(r.ok for r in rows) and sum(r.planned == FP32 for r in rows) >= 10
    # without the per-channel view onnxruntime quantises those float convs: the check says so
    import compiler.emit as emit_module

    monkeypatch.setattr(emit_module, "float_readers", lambda g: frozenset())
    rows = check_kernels(q, emit_module.emit(q))
    bad = [r for r in rows if not r.ok]
    assert bad and all((r.planned, r.onnxruntime) == (FP32, "QLinearConv") for r in bad)
    with pytest.raises(UserError, match=f"layer {bad[0].layer}: planned kernel fp32, "
                                        "onnxruntime runs QLinearConv"):
        require_match(rows)


def test_forced_accuracy_level_is_reported_against_the_plan() -> None:
    """A plan of CompInt8 MatMulNBits (w4, a8 on a dotprod target) emitted with
    accuracy_level forced to 0 runs CompFp32: every such layer is a mismatch."""
    g, _, calib = _model("digits_transformer")
    bits = np.where(assignment.uniform(g, 4) == 4, 4, 32)
    bits[bits[:, 0] == 4, 1] = 8
    q = quantize(g, bits, calib, QuantOptions(clip="minmax"))
    assert all(r.ok for r in check_kernels(q, emit(q)))
    rows = check_kernels(q, emit(q, EmitOptions(accuracy_level=0)))
    bad = {(r.planned, r.onnxruntime) for r in rows if not r.ok}
    assert bad == {("MatMulNBits/acc4", "MatMulNBits/acc0")}


def test_quantize_fails_on_a_mismatch_and_writes_nothing(tmp_path) -> None:
    """`kernel_check="fail"`: one line naming the layer, no file; "report" records both."""
    from edgesim.quantize import quantize_model

    g = _model("digits_transformer")[0]
    linears = [la.name for la in g.layers if la.kind == "linear"]
    plan = {n: [4, 8] for n in linears}
    out = tmp_path / "m.onnx"
    with pytest.raises(UserError, match=rf"layer {linears[0]}: planned kernel "
                                        r"MatMulNBits/acc4, onnxruntime runs MatMulNBits/acc0"):
        quantize_model(zoo.build("digits_transformer"), plan, calib_random=2, out=out,
                       emit_options=EmitOptions(accuracy_level=0), kernel_check="fail")
    assert not out.exists()
    r = quantize_model(zoo.build("digits_transformer"), plan, calib_random=2, out=out,
                       kernel_check="report")
    kernels = {x.name: (x.planned_kernel, x.onnxruntime_kernel) for x in r.layers}
    assert all(kernels[n] == ("MatMulNBits/acc4",) * 2 for n in linears)
