"""Derive per-layer shapes of ncnn's benchmark networks into `layers.csv` (run once).

ncnn's `benchmark/models/*.param` files (Tencent/ncnn) describe each network layer by layer
and annotate every output blob with its shape (`-23330=4,3,w,h,c`). This script reads those
files from a local ncnn checkout and writes the GEMM view edgesim's cost models need (m, n, k,
groups per layer, activation elements in and out, streaming ops). Only these derived numbers
are kept in the repository; the network files stay in ncnn.

`--int8` instead writes each GEMM layer's int8 mode from the `*_int8.param` files (written by
ncnn's `tools/quantize/ncnn2int8`): `requant` (`int8_scale_term` 8= above 100: the output is
requantised to int8 for the next int8 conv), `dequant` (8= 1..100: int8 conv, float output),
`float` (no 8=: the layer stays float).

Usage: python bench/fidelity/extract_ncnn.py NCNN_BENCHMARK_MODELS_DIR > bench/fidelity/layers.csv
       python bench/fidelity/extract_ncnn.py --int8 NCNN_BENCHMARK_MODELS_DIR \
           > bench/fidelity/ncnn_int8.csv
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

MODELS = ("squeezenet", "mobilenet", "mobilenet_v2", "mobilenet_v3", "shufflenet",
          "shufflenet_v2", "mnasnet", "proxylessnasnet", "efficientnet_b0", "regnety_400m",
          "googlenet", "resnet18", "alexnet", "vgg16", "resnet50")
# ncnn's LRN across channels (src/layer/arm/lrn_arm.cpp @a4d2ea1, fp32 only): per element a
# square, local_size = 5 adds of the squares, scale and bias, pow_ps and the final multiply;
# pow_ps = exp_ps(b * log_ps(a)) (neon_mathfun.h, aarch64): log_ps 30 vector ops, exp_ps 20
LRN_OPS = 1 + 5 + 2 + (30 + 1 + 20) + 1
# ncnn layer type -> edgesim kind and streaming ops per output element
STREAM = {"ReLU": ("activation", 1), "HardSwish": ("activation", 4),
          "HardSigmoid": ("activation", 3), "Swish": ("activation", 4),
          "BinaryOp": ("eltwise", 1), "Eltwise": ("eltwise", 1), "Softmax": ("softmax", 3),
          "LRN": ("norm", LRN_OPS), "Reduction": ("reduce", 1), "Pooling": ("pool", 0),
          "Concat": ("concat", 0), "ShuffleChannel": ("transpose", 0), "Slice": ("split", 0),
          "Padding": ("pad", 0)}
# exp_ps calls per output element (compiler.ir.Facts.transcendentals): Swish x / (1 + exp(-x))
# (swish_arm.cpp), Softmax's exp (softmax_arm.cpp); HardSwish / HardSigmoid are an affine map
# clamped by a max and a min (hardswish_arm.cpp, hardsigmoid_arm.cpp: vmla / vfma, vmax,
# vmin, and for HardSwish a vmul) with none; LRN's pow_ps is already counted in LRN_OPS
TRANSCENDENTALS = {"Swish": 1, "Softmax": 1}
# nodes of the ONNX function body of the op a layer stands for (compiler.ir.Facts.
# function_nodes), where onnxruntime runs it inlined: HardSwish-14 = HardSigmoid, then Mul
FUNCTION_NODES = {"HardSwish": 2}
VIEWS = ("Split", "Reshape", "Flatten", "Dropout", "Noop")  # ncnn shares the blob, no copy
FIELDS = ("model", "layer", "kind", "m", "n", "k", "groups", "a_in", "a_out", "w_elems", "ops",
          "transcendentals", "function_nodes")
INT8_MODELS = ("squeezenet", "mobilenet", "googlenet", "resnet18", "resnet50", "vgg16")
GEMM_TYPES = ("Convolution", "ConvolutionDepthWise", "InnerProduct")


def shapes(params: dict[str, str], nout: int) -> list[int]:
    """Output element counts from the `-23330` shape hint (one entry per output blob). The
    hint is its length, then four values per blob: dims, w, h, c (the benchmark files'
    format); a blob of dims n holds the product of its first n extents, the rest are padding
    (`4,1,72,1,1`: 72 elements)."""
    vals = [int(v) for v in params.get("-23330", "0").split(",")]
    if len(vals) < 2:
        return []
    if vals[0] != 4 * nout:
        raise ValueError(f"shape hint of {nout} blobs is not 4 values each: {vals}")
    return [math.prod(vals[i + 1:i + 1 + vals[i]]) for i in range(1, len(vals), 4)]


def gemm_row(kind: str, params: dict[str, str], out_elems: int) -> dict[str, int]:
    """Convolution / ConvolutionDepthWise / InnerProduct in the GEMM view of compiler.ir."""
    cout, wsize = int(params["0"]), int(params["6" if kind != "InnerProduct" else "2"])
    groups = int(params.get("7", "1")) if kind == "ConvolutionDepthWise" else 1
    m = 1 if kind == "InnerProduct" else out_elems // cout
    return {"kind": "linear" if kind == "InnerProduct" else "conv", "m": m,
            "n": cout // groups, "k": wsize // cout, "groups": groups, "w_elems": wsize}


def stream_row(kind: str, params: dict[str, str], a_in: int, out_elems: int) -> dict[str, int]:
    """Non-GEMM layers: kind and ops (pooling: one op per window tap)."""
    if kind in VIEWS:
        return {"kind": "reshape" if kind != "Split" else "identity", "ops": 0}
    name, per = STREAM[kind]
    if kind == "Pooling":
        window = int(params.get("1", "1")) ** 2
        return {"kind": name, "ops": a_in if params.get("4") == "1" else out_elems * window}
    return {"kind": name, "ops": per * out_elems,
            "transcendentals": TRANSCENDENTALS.get(kind, 0) * out_elems,
            "function_nodes": FUNCTION_NODES.get(kind, 1)}


def parse(model: str, text: str) -> list[dict]:
    """One row per compute or copy layer of an ncnn .param file."""
    elems: dict[str, int] = {}
    rows = []
    for line in text.splitlines()[2:]:
        tok = line.split()
        kind, name, nin, nout = tok[0], tok[1], int(tok[2]), int(tok[3])
        ins, outs = tok[4:4 + nin], tok[4 + nin:4 + nin + nout]
        params = dict(p.split("=", 1) for p in tok[4 + nin + nout:])
        out_sizes = shapes(params, nout) or [0] * nout
        for blob, size in zip(outs, out_sizes):
            elems[blob] = size
        if kind in ("Input", "MemoryData"):
            continue
        a_in, a_out = sum(elems.get(b, 0) for b in ins), sum(out_sizes)
        row = {"model": model, "layer": name, "m": 0, "n": 0, "k": 0, "groups": 1,
               "a_in": a_in, "a_out": a_out, "w_elems": 0, "ops": 0, "transcendentals": 0,
               "function_nodes": 1}
        if kind in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
            row.update(gemm_row(kind, params, a_out))
        else:
            row.update(stream_row(kind, params, a_in, a_out))
        rows.append(row)
    return rows


def int8_modes(model: str, text: str) -> list[dict[str, str]]:
    """(model, layer, mode) of every GEMM layer of an ncnn `*_int8.param` file."""
    rows = []
    for line in text.splitlines()[2:]:
        tok = line.split()
        if tok[0] not in GEMM_TYPES:
            continue
        params = dict(p.split("=", 1) for p in tok[4 + int(tok[2]) + int(tok[3]):])
        term = int(params.get("8", "0"))
        mode = "requant" if term > 100 else ("dequant" if term > 0 else "float")
        rows.append({"model": model, "layer": tok[1], "mode": mode})
    return rows


def main(models_dir: str, int8: bool = False) -> None:
    out = csv.DictWriter(sys.stdout, ("model", "layer", "mode") if int8 else FIELDS,
                         lineterminator="\n")
    out.writeheader()
    for model in INT8_MODELS if int8 else MODELS:
        name = f"{model}_int8.param" if int8 else f"{model}.param"
        text = (Path(models_dir) / name).read_text()
        out.writerows(int8_modes(model, text) if int8 else parse(model, text))


if __name__ == "__main__":
    main(sys.argv[-1], int8="--int8" in sys.argv)
