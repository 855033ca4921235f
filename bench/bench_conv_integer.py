"""Dynamic int8 conv cliff: onnxruntime's quantize_dynamic (DynamicQuantizeLinear ->
ConvInteger -> Cast -> Mul) against the fp32 model, measured on this machine and predicted
by `edgesim simulate` of the quantized file (rpi5, rpi4, this host probed). Prints JSON.

    python bench/bench_conv_integer.py [--runs 20] [--threads 1] [--host host.yaml]

Measured times: `edgesim.validate.busy_host_ms` (robust on a shared, loaded machine);
`direction_right` says whether this host's predicted ConvInteger / fp32 ratio lies
on the measured side of 1.

Graphs: three layers of a 3x3 depthwise conv, a 1x1 conv, a depthwise-separable block, and a
dense 3x3 conv, 64 channels at 56x56.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from edgesim.api import resolve_target, simulate
from edgesim.validate import busy_host_ms
from hwmodels.probe import probe_host
from hwmodels.target import load_target

CH, HW = 64, 56
LAYERS = {"depthwise": (("dw",),), "pointwise": (("pw",),), "separable": (("dw", "pw"),),
          "dense3x3": (("dense",),)}


def _conv(kind: str, i: int, x: str, rng: np.random.Generator) -> tuple[onnx.NodeProto, ...]:
    shape, attrs = {"dw": ((CH, 1, 3, 3), {"group": CH, "pads": [1] * 4}),
                    "pw": ((CH, CH, 1, 1), {}),
                    "dense": ((CH, CH, 3, 3), {"pads": [1] * 4})}[kind]
    w = numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), f"w{i}")
    return w, helper.make_node("Conv", [x, f"w{i}"], [f"y{i}"], name=f"{kind}{i}", **attrs)


def build(kinds: tuple[str, ...]) -> onnx.ModelProto:
    """Three repeats of `kinds` as a float ONNX model, input [1, CH, HW, HW]."""
    rng, x, inits, nodes = np.random.default_rng(0), "x", [], []
    for i, kind in enumerate(kinds * 3):
        w, node = _conv(kind, i, x, rng)
        inits.append(w)
        nodes.append(node)
        x = node.output[0]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CH, HW, HW])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def dynamic(model: onnx.ModelProto, tmp: str) -> onnx.ModelProto:
    src, dst = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
    onnx.save(model, src)
    quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])
    return onnx.load(dst)


def row(name: str, kinds: tuple[str, ...], targets, runs: int, threads: int) -> dict:
    fp32 = build(kinds)
    with tempfile.TemporaryDirectory() as tmp:
        q = dynamic(fp32, tmp)
    feeds = {"x": np.random.default_rng(1).standard_normal((1, CH, HW, HW)).astype(np.float32)}
    ms = {k: busy_host_ms(m, feeds, threads, runs) for k, m in
          (("fp32", fp32), ("conv_integer", q))}
    pred = {}
    for t in targets:
        s = simulate(q, t, threads=threads if t.name == "host" else None)
        pred[t.name] = {"fp32_ms": round(s.fp32.latency_ms, 4),
                        "conv_integer_ms": round(s.total.latency_ms, 4),
                        "ratio": round(s.total.latency_ms / s.fp32.latency_ms, 2)}
    ratio = ms["conv_integer"] / ms["fp32"]
    return {"graph": name, "measured_here": {**{k: round(v, 4) for k, v in ms.items()},
            "ratio": round(ratio, 2), "threads": threads},
            "predicted": pred,
            "direction_right": (pred["host"]["ratio"] > 1) == (ratio > 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--host", help="host target YAML (default: probe now)")
    args = p.parse_args()
    host = load_target(args.host) if args.host else probe_host()
    targets = [resolve_target("rpi5"), resolve_target("rpi4"), host]
    print(json.dumps([row(name, kinds[0], targets, args.runs, args.threads)
                      for name, kinds in LAYERS.items()], indent=1))


if __name__ == "__main__":
    main()
