"""MatMulNBits with float zero points vs packed integer zero points, measured on this machine
and predicted by `edgesim simulate` on this machine probed as a target. Prints JSON.

Float zero points stop onnxruntime from prepacking B: every run dequantises B with the scalar
`DequantizeBlockwise<float, float>` loop (contrib_ops/cpu/quantization/matmul_nbits_impl.cc)
and runs an fp32 GEMM (microsoft/onnxruntime#28552); integer zero points take the prepacked
MLAS kernel. Measured times are the fastest of `--runs` runs (a shared machine: preemption
only adds time).

    python bench/bench_nbits_float_zp.py [--k 2048] [--n 2048] [--m 1] [--runs 30]
        [--host host.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.packing import pack_matmulnbits_codes  # noqa: E402
from edgesim import api  # noqa: E402
from hwmodels.probe import probe_host  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

BITS, BLOCK = 4, 32


def build(m: int, k: int, n: int, float_zp: bool) -> onnx.ModelProto:
    """y = x @ W as a 4-bit MatMulNBits whose zero points are packed uint8 or float."""
    rng = np.random.default_rng(0)
    zps = rng.integers(0, 16, (n, k // BLOCK)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.02, (n, k // BLOCK)).astype(np.float32)
    blob = pack_matmulnbits_codes(rng.integers(0, 16, (k, n)), scales, zps, BITS, BLOCK)
    zp = zps.astype(np.float32) if float_zp else blob.zero_points
    inits = [numpy_helper.from_array(a, name) for a, name in
             ((blob.b, "B"), (blob.scales, "scales"), (zp, "zp"))]
    node = helper.make_node("MatMulNBits", ["x", "B", "scales", "zp"], ["y"], name="fc",
                            domain="com.microsoft", **blob.attrs())
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])


def fastest_ms(model: onnx.ModelProto, x: np.ndarray, runs: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    sess.run(None, {"x": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {"x": x})
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--host", help="host target YAML (default: probe now)")
    args = p.parse_args()
    host = load_target(args.host) if args.host else probe_host()
    x = np.random.default_rng(1).standard_normal((args.m, args.k)).astype(np.float32)
    out = {}
    for name, fz in (("int_zp", False), ("float_zp", True)):
        model = build(args.m, args.k, args.n, fz)
        sim = api.simulate(model, host, threads=1)
        out[name] = {"measured_ms": round(fastest_ms(model, x, args.runs), 4),
                     "predicted_ms": round(sim.total.latency_ms, 4)}
    ratio = {k: round(out["float_zp"][k] / out["int_zp"][k], 2)
             for k in ("measured_ms", "predicted_ms")}
    print(json.dumps({"shape": [args.m, args.k, args.n], "bits": BITS, "block": BLOCK,
                      "threads": 1, **out, "float_over_int": ratio}, indent=1))


if __name__ == "__main__":
    main()
