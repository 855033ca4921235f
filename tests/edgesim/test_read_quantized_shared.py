"""A QDQ activation read by a conv and by other nodes: the reader plans the kernel onnxruntime's
optimised graph runs (`check_kernels` compares the two). onnxruntime gives every reader its own
DequantizeLinear; on x86 int8 activations reach an integer kernel only through its
QDQS8ToU8Transformer, which converts a QuantizeLinear with exactly one consumer, so an int8
activation read more than once stays fp32 there, a uint8 one fuses."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from edgesim import api
from edgesim.kernel_check import check_kernels, observed_kernels
from edgesim.simulation import planned_bits

pytestmark = pytest.mark.ort


def _model(signed: bool, other: str) -> onnx.ModelProto:
    """x -> Q -> DQ -> conv -> Q -> DQ, the DQ (or, for "two_dq", the Q through a second
    DQ) also read by `other`: a float Add (quantize_static's residual), a second conv, or
    nothing."""
    rng = np.random.default_rng(0)
    zp = np.int8(0) if signed else np.uint8(128)
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(zp, "z"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(rng.standard_normal((1, 4, 6, 6)).astype(np.float32), "y")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="xQ"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="xDQ")]
    outputs = []
    for conv, src in (("a", "xd"), ("b", "xd2" if other == "two_dq" else "xd")):
        if conv == "b" and other not in ("conv", "two_dq"):
            continue
        inits.append(numpy_helper.from_array(
            rng.integers(-100, 100, (4, 4, 3, 3)).astype(np.int8), f"{conv}_wq"))
        nodes += [helper.make_node("DequantizeLinear", [f"{conv}_wq", "ws", "wz"], [f"{conv}_w"],
                                   name=f"{conv}_wDQ", axis=0),
                  helper.make_node("Conv", [src, f"{conv}_w"], [f"{conv}_c"], name=f"{conv}/Conv",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("QuantizeLinear", [f"{conv}_c", "s", "z"], [f"{conv}_q"],
                                   name=f"{conv}_Q"),
                  helper.make_node("DequantizeLinear", [f"{conv}_q", "s", "z"], [f"{conv}_out"],
                                   name=f"{conv}_DQ")]
        outputs.append(f"{conv}_out")
    if other == "two_dq":
        nodes.insert(2, helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd2"],
                                         name="xDQ2"))
    if other == "add":
        nodes.append(helper.make_node("Add", ["xd", "y"], ["sum"], name="add"))
        outputs.append("sum")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 4, 6, 6]) for o in outputs],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("other", ["add", "conv", "two_dq", "none"])
@pytest.mark.parametrize("signed", [True, False])
def test_shared_activation_plans_the_kernel_onnxruntime_runs(signed: bool, other: str) -> None:
    model = _model(signed, other)
    rows = check_kernels(load(model), model)
    assert rows and all(r.ok for r in rows), rows
    shared = other != "none"
    assert all(r.onnxruntime == ("fp32" if signed and shared else "QLinearConv")
               for r in rows), rows


def _arm_kernels(model: onnx.ModelProto) -> dict[str, str]:
    """Layer -> the kernel onnxruntime's optimised graph runs where int8 QDQ fusion is allowed,
    as on Arm builds (QDQIsInt8Allowed() under MLAS_TARGET_ARM_ANY; `session.qdqisint8allowed`
    sets it on this host)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.qdqisint8allowed", "1")
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = os.path.join(tmp, "arm.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["NchwcTransformer"])
        optimised = onnx.load(opts.optimized_model_filepath)
    names = ["a/Conv", "b/Conv"]
    return dict(observed_kernels(optimised, names, frozenset(names)))


@pytest.mark.parametrize("other", ["add", "conv"])
def test_shared_int8_activation_runs_int8_on_arm_and_fp32_on_x86(other: str) -> None:
    model = _model(True, other)
    assert set(_arm_kernels(model).values()) == {"QLinearConv"}  # the Arm oracle
    arm = planned_bits(load(model, arch="arm64"))
    x86 = load(model, arch="x86_64")
    assert all(r.ok and r.onnxruntime == "fp32" for r in check_kernels(x86, model))  # this host
    convs = [i for i, la in enumerate(x86.layers) if la.kind == "conv"]
    assert convs and (arm[convs] == 8).all()
    assert (planned_bits(x86)[convs, 1] == 32).all()
    rpi5 = api.simulate(model, "rpi5")
    assert all((r.w_bits, r.a_bits) == (8, 8) for r in rpi5.layers if r.kind == "conv")
