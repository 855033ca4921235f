"""Per-layer GEMM view of the four MLPerf Tiny v1.0 reference models; appends to layers.csv.

Architectures from the MLPerf Tiny reference implementations (mlcommons/tiny,
benchmark/training: keyword_spotting DS-CNN, image_classification ResNet-8,
visual_wake_words MobileNetV1 0.25 at 96x96, anomaly_detection FC autoencoder) and Banbury et
al., "MLPerf Tiny Benchmark", NeurIPS Datasets and Benchmarks 2021, Table 1.

Usage: python bench/fidelity/mlperf_tiny_layers.py >> bench/fidelity/layers.csv
"""

from __future__ import annotations

import csv
import sys

FIELDS = ("model", "layer", "kind", "m", "n", "k", "groups", "a_in", "a_out", "w_elems", "ops",
          "transcendentals", "function_nodes")


def conv(model: str, name: str, hw_in: tuple[int, int], cin: int, cout: int,
         kernel: tuple[int, int], stride: int, depthwise: bool = False) -> tuple[dict, tuple]:
    """A 'same'-padded conv (depthwise: one filter per channel) and its output (h, w)."""
    h, w = -(-hw_in[0] // stride), -(-hw_in[1] // stride)
    groups = cin if depthwise else 1
    k = (1 if depthwise else cin) * kernel[0] * kernel[1]
    n = 1 if depthwise else cout
    row = {"model": model, "layer": name, "kind": "conv", "m": h * w, "n": n, "k": k,
           "groups": groups, "a_in": hw_in[0] * hw_in[1] * cin, "a_out": h * w * cout,
           "w_elems": n * k * groups, "ops": 0, "transcendentals": 0}
    return row, (h, w)


def stream(model: str, name: str, kind: str, a_in: int, a_out: int, ops: int) -> dict:
    """A streaming layer; softmax makes one exp per element (`Facts.transcendentals`)."""
    return {"model": model, "layer": name, "kind": kind, "m": 0, "n": 0, "k": 0, "groups": 1,
            "a_in": a_in, "a_out": a_out, "w_elems": 0, "ops": ops,
            "transcendentals": a_out if kind == "softmax" else 0}


def linear(model: str, name: str, k: int, n: int) -> dict:
    return {"model": model, "layer": name, "kind": "linear", "m": 1, "n": n, "k": k,
            "groups": 1, "a_in": k, "a_out": n, "w_elems": k * n, "ops": 0, "transcendentals": 0}


def ds_cnn() -> list[dict]:
    """KWS DS-CNN: conv 10x4 /2 -> 64 on 49x10 MFCC, 4 x (dw 3x3 + pw 64), pool, fc 12."""
    rows, hw = [], (49, 10)
    r, hw = conv("kws_dscnn", "conv1", hw, 1, 64, (10, 4), 2)
    rows.append(r)
    for i in range(4):
        r, _ = conv("kws_dscnn", f"dw{i}", hw, 64, 64, (3, 3), 1, depthwise=True)
        p, _ = conv("kws_dscnn", f"pw{i}", hw, 64, 64, (1, 1), 1)
        rows += [r, p]
    rows.append(stream("kws_dscnn", "pool", "pool", hw[0] * hw[1] * 64, 64, hw[0] * hw[1] * 64))
    return rows + [linear("kws_dscnn", "fc", 64, 12)]


def resnet8() -> list[dict]:
    """IC ResNet-8 on 32x32x3: conv 16, three stacks (16, 32 /2, 64 /2) with 1x1 shortcuts."""
    rows, hw = [], (32, 32)
    r, hw = conv("ic_resnet8", "conv1", hw, 3, 16, (3, 3), 1)
    rows.append(r)
    cin = 16
    for s, cout in enumerate((16, 32, 64)):
        stride = 1 if s == 0 else 2
        a, out = conv("ic_resnet8", f"s{s}a", hw, cin, cout, (3, 3), stride)
        b, _ = conv("ic_resnet8", f"s{s}b", out, cout, cout, (3, 3), 1)
        rows += [a, b]
        if stride > 1:
            rows.append(conv("ic_resnet8", f"s{s}sc", hw, cin, cout, (1, 1), stride)[0])
        n = out[0] * out[1] * cout
        rows.append(stream("ic_resnet8", f"s{s}add", "eltwise", 2 * n, n, n))
        hw, cin = out, cout
    rows.append(stream("ic_resnet8", "pool", "pool", hw[0] * hw[1] * 64, 64, hw[0] * hw[1] * 64))
    return rows + [linear("ic_resnet8", "fc", 64, 10)]


def mobilenet_v1_025() -> list[dict]:
    """VWW MobileNetV1 width 0.25 on 96x96x3, 2 classes."""
    plan = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)] + [(1, 128)] * 5 + [
        (2, 256), (1, 256)]
    rows, hw = [], (96, 96)
    r, hw = conv("vww_mobilenet", "conv1", hw, 3, 8, (3, 3), 2)
    rows.append(r)
    cin = 8
    for i, (stride, cout) in enumerate(plan):
        d, out = conv("vww_mobilenet", f"dw{i}", hw, cin, cin, (3, 3), stride, depthwise=True)
        p, _ = conv("vww_mobilenet", f"pw{i}", out, cin, cout, (1, 1), 1)
        rows += [d, p]
        hw, cin = out, cout
    rows.append(stream("vww_mobilenet", "pool", "pool", hw[0] * hw[1] * cin, cin,
                       hw[0] * hw[1] * cin))
    return rows + [linear("vww_mobilenet", "fc", cin, 2)]


def fc_autoencoder() -> list[dict]:
    """AD autoencoder: 640 -> 128 x4 -> 8 -> 128 x4 -> 640, BN + ReLU after each hidden."""
    dims = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640]
    rows = []
    for i, (k, n) in enumerate(zip(dims, dims[1:])):
        rows.append(linear("ad_autoencoder", f"fc{i}", k, n))
        if i < len(dims) - 2:
            rows.append(stream("ad_autoencoder", f"bnrelu{i}", "activation", n, n, 3 * n))
    return rows


def main() -> None:
    # every layer of these models runs as one node (no ONNX function ops)
    out = csv.DictWriter(sys.stdout, FIELDS, restval=1, lineterminator="\n")
    for rows in (ds_cnn(), resnet8(), mobilenet_v1_025(), fc_autoencoder()):
        out.writerows(rows)


if __name__ == "__main__":
    main()
