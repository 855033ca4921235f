"""Hard-swish chains fused to one `hard_swish` layer (`compiler.frontend.hswish_pattern`):
every exporter form becomes one layer, near-misses stay as they are, and the fp32 emission
computes what onnxruntime computes on the source graph (the oracle)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgesim import api
from edgesim.loading import load_graph

SHAPE = [1, 4, 5, 5]
CONSTS = {"three": 3.0, "zero": 0.0, "six": 6.0, "five": 5.0, "sixth": 1.0 / 6.0}


def _clip_chain(k: str, scale: tuple[str, str], divide_first: bool = False,
                shift: str = "three") -> list[onnx.NodeProto]:
    """x * clip(x + shift, 0, 6) scaled by `scale` ((op, constant)), product or scale first."""
    op, const = scale
    nodes = [helper.make_node("Add", ["x", shift], [f"{k}a"]),
             helper.make_node("Clip", [f"{k}a", "zero", "six"], [f"{k}c"])]
    if divide_first:
        return nodes + [helper.make_node(op, [f"{k}c", const], [f"{k}s"]),
                        helper.make_node("Mul", ["x", f"{k}s"], [k])]
    return nodes + [helper.make_node("Mul", [f"{k}c", "x"], [f"{k}m"]),
                    helper.make_node(op, [f"{k}m", const], [k])]


def _hard_sigmoid_chain(k: str, alpha: float) -> list[onnx.NodeProto]:
    return [helper.make_node("HardSigmoid", ["x"], [f"{k}h"], alpha=alpha, beta=0.5),
            helper.make_node("Mul", ["x", f"{k}h"], [k])]


FUSED = {"div": _clip_chain("div", ("Div", "six")),
         "mul_sixth": _clip_chain("mul_sixth", ("Mul", "sixth")),
         "div_first": _clip_chain("div_first", ("Div", "six"), divide_first=True),
         "hard_sigmoid": _hard_sigmoid_chain("hard_sigmoid", 1.0 / 6.0)}
KEPT = {"div_by_five": _clip_chain("div_by_five", ("Div", "five")),      # not / 6
        "shift_five": _clip_chain("shift_five", ("Div", "six"), shift="five"),  # not + 3
        "hard_sigmoid_02": _hard_sigmoid_chain("hard_sigmoid_02", 0.2)}  # ONNX default alpha


def model(branches: dict[str, list[onnx.NodeProto]]) -> onnx.ModelProto:
    nodes = [n for chain in branches.values() for n in chain]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, SHAPE) for k in branches]
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in CONSTS.items()]
    graph = helper.make_graph(nodes, "hswish", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, SHAPE)], outs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def kinds(m: onnx.ModelProto) -> Counter:
    return Counter((layer.kind, layer.attrs.get("fn")) for layer in load_graph(m).layers)


def test_each_exporter_form_is_one_hard_swish() -> None:
    for name, chain in FUSED.items():
        assert kinds(model({name: chain})) == {("activation", "hard_swish"): 1}, name


def test_near_misses_are_not_fused() -> None:
    for name, chain in KEPT.items():
        assert ("activation", "hard_swish") not in kinds(model({name: chain})), name


def test_intermediate_read_elsewhere_is_not_fused() -> None:
    m = model({"div": FUSED["div"]})
    m.graph.output.append(helper.make_tensor_value_info("divc", TensorProto.FLOAT, SHAPE))
    assert ("activation", "hard_swish") not in kinds(m)


def test_emitted_float_model_matches_onnxruntime_on_the_source(tmp_path: Path) -> None:
    source, out = tmp_path / "src.onnx", tmp_path / "fp32.onnx"
    onnx.save(model({**FUSED, **KEPT}), source)
    api.quantize(str(source), "fp32", out, calib_random=1, kernel_check="off")
    emitted = onnx.load(out)
    assert Counter(n.op_type for n in emitted.graph.node)["HardSwish"] == len(FUSED)
    # both sides of the clip's corners (x + 3 = 0 and 6) and the linear middle
    x = np.linspace(-5.0, 5.0, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    run = lambda p: dict(zip(  # noqa: E731
        [o.name for o in onnx.load(p).graph.output],
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})))
    want, got = run(source), run(out)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6, err_msg=name)
