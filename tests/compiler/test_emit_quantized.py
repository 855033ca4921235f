"""Emission of quantised graphs: models and every (kind, format) pair vs the fake-quant
simulation in onnxruntime, INT4 read-back, accuracy on the digits test split, and file size."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.emit import emit, write
from compiler.executor import run
from compiler.fake_quant import quant_names
from compiler.frontend import load
from compiler.ir import Graph
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from edgesim import assignment, zoo
from tests.compiler.emit_cases import CONV, assert_matches_sim, f32, one_layer, ort_run, w_, x_

pytestmark = pytest.mark.ort


# ----------------------------------------------------------------------------------------------
# Quantised models against the fake-quant simulation


def _digits(name: str, batch: int):
    d = zoo.load_digits_data()
    m = zoo.build(name)
    calib = calibrate(load(m, {"input": (200, 1, 8, 8)}), [{"input": d["x_calib"]}])
    return load(m, {"input": (batch, 1, 8, 8)}), calib, d


def _mixed(g: Graph) -> np.ndarray:
    """Alternate W8A8, W4 and W3 weight-only over the MAC layers (3 bits: INT4 container)."""
    bits = assignment.uniform(g, 8)
    macs = np.flatnonzero(assignment.quantisable(g) & assignment.has_weights(g))
    for j, i in enumerate(macs):
        bits[i] = [(8, 8), (4, 32), (3, 32)][j % 3]
    return bits


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
@pytest.mark.parametrize("label", ["w8a8", "w4", "mixed"])
def test_digits_models_match_simulation(name: str, label: str) -> None:
    g, calib, d = _digits(name, 64)
    bits = {"w8a8": assignment.uniform(g, 8), "w4": assignment.uniform(g, 4),
            "mixed": _mixed(g)}[label]
    q = quantize(g, bits, calib)
    kind = "transformer" if name == "digits_transformer" else \
        "exact" if label == "w8a8" else "cnn"
    assert_matches_sim(emit(q), q, {"input": d["x_test"][:64]}, kind)


def _zoo_feeds(g: Graph, rng: np.random.Generator) -> dict:
    feeds = {}
    for n in g.inputs:
        s = g.types[n]
        feeds[n] = (rng.integers(0, 1000, s.shape) if n == "input_ids" else
                    np.ones(s.shape) if s.dtype == "int64" else rng.standard_normal(s.shape))
        feeds[n] = feeds[n].astype(s.dtype)
    return feeds


@pytest.mark.parametrize("name,kw", [
    ("mobilenet_v2", dict(resolution=32, num_classes=10)),
    ("minilm", dict(seq=16, depth=2, vocab=1000)),
])
def test_zoo_models_match_simulation(name: str, kw: dict) -> None:
    rng = np.random.default_rng(1)
    g = load(zoo.build(name, **kw))
    calib = calibrate(g, [_zoo_feeds(g, rng) for _ in range(3)])
    feeds = _zoo_feeds(g, rng)
    opts = QuantOptions(clip="minmax", embedding_bits=8, min_embedding=1000)
    for label, bits in (("w8a8", assignment.uniform(g, 8)), ("w4", assignment.uniform(g, 4)),
                        ("mixed", _mixed(g))):
        q = quantize(g, bits, calib, opts)
        kind = "transformer" if name == "minilm" else "exact" if label == "w8a8" else "cnn"
        assert_matches_sim(emit(q), q, feeds, kind)


def test_int4_initializers_read_back() -> None:
    g, calib, _ = _digits("digits_cnn", 1)
    q = quantize(g, assignment.uniform(g, 4), calib)
    model = emit(q)
    int4 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT4]
    conv = [lay for lay in q.layers if lay.quant.fmt == "int_dq"]
    assert len(int4) == len(conv) == 3
    for t, layer in zip(int4, conv):
        np.testing.assert_array_equal(numpy_helper.to_array(t),
                                      q.weights[quant_names(layer.name).codes])


# ----------------------------------------------------------------------------------------------
# Accuracy of the emitted models in onnxruntime (digits test split, 360 images)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels))


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_w8a8_accuracy_in_onnxruntime(name: str) -> None:
    g, calib, d = _digits(name, 360)
    feeds = {"input": d["x_test"]}
    ref = run(g, feeds)["logits"]
    out = ort_run(emit(quantize(g, assignment.uniform(g, 8), calib)), feeds)["logits"]
    drop = _accuracy(ref, d["y_test"]) - _accuracy(out, d["y_test"])
    assert drop <= 0.005  # within 0.5 points of fp32
    cos = np.sum(out * ref, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.mean() >= 0.99


# ----------------------------------------------------------------------------------------------
# Size on disk


def _expected_bytes(g: Graph, q: Graph) -> float:
    """sum(bits x params) / 8 + 4-byte scales (+ 1-byte zero points and the int32 bias's
    scale for W8A8) + every other constant at its own width; written out independently of
    the emitter."""
    total, used = 0.0, set()
    for layer, ql in zip(g.layers, q.layers):
        wq = ql.quant
        for i, t in enumerate(layer.inputs):
            if t not in g.weights or t in used:
                continue
            used.add(t)
            w = g.weights[t]
            if wq.w_bits is None or i != 1:
                total += w.nbytes
            elif wq.fmt == "qdq":
                total += w.size + w.shape[0] * (4 + 1) + (4 if len(layer.inputs) > 2 else 0) \
                    * w.shape[0] * (layer.kind == "conv")
            else:  # per-channel conv (INT4) or per-block-32 linear (MatMulNBits)
                scales = w.shape[0] * (-(-w.shape[1] // 32) if layer.kind == "linear" else 1)
                total += w.size * wq.w_bits / 8 + 4 * scales
    return total


@pytest.mark.parametrize("bits", [8, 4])
def test_file_size_within_5_percent(tmp_path, bits: int) -> None:
    g = load(zoo.build("mobilenet_v2", resolution=32, num_classes=100))
    calib = calibrate(g, [_zoo_feeds(g, np.random.default_rng(2))])
    q = quantize(g, assignment.uniform(g, bits), calib, QuantOptions(clip="minmax"))
    path = write(emit(q), tmp_path / "m.onnx")
    expected = _expected_bytes(g, q)
    assert abs(os.path.getsize(path) / expected - 1) <= 0.05, (os.path.getsize(path), expected)


# ----------------------------------------------------------------------------------------------
# Every (kind, format) pair on one layer, every bit width path: emitted == simulated


QUANT_LAYERS = [
    ("conv_transpose", dict(strides=(2, 2), pads=(0, 1, 1, 0), dilations=(1, 1), group=1,
                            output_padding=(1, 0)),
     [x_(1, 3, 4, 4), w_("w", f32(3, 2, 3, 3)), w_("b", f32(2))]),
    ("conv", CONV, [x_(1, 40, 7, 6), w_("w", f32(6, 40, 3, 3)), w_("b", f32(6))]),
    ("linear", {}, [x_(2, 3, 40), w_("w", f32(16, 40)), w_("b", f32(16))]),
    ("matmul", {}, [x_(2, 3, 8), ("z", f32(2, 8, 5), False)]),
]
BIT_PATHS = [((8, 8), "auto"), ((4, 32), "auto"), ((8, 4), "auto"), ((8, 16), "auto"),
             ((6, 32), "per_block"), ((16, 32), "auto"), ((3, 8), "auto"), ((2, 32), "auto")]


@pytest.mark.parametrize("case", QUANT_LAYERS, ids=[c[0] for c in QUANT_LAYERS])
def test_every_format_matches_simulation(case: tuple) -> None:
    kind, attrs, inputs = case
    g, feeds = one_layer(kind, attrs, inputs)
    calib = calibrate(g, [feeds])
    fmts = set()
    for bits, gran in BIT_PATHS:
        opts = QuantOptions(granularity=gran, act_matmul="int8")
        q = quantize(g, np.array([bits]), calib, opts)
        fmts.add(q.layers[0].quant.fmt)
        sim, got = run(q, feeds, fake_quant=True)["y0"], ort_run(emit(q), feeds)["y0"]
        np.testing.assert_allclose(got, sim, rtol=1e-5, atol=1e-5 * np.abs(sim).max())
    assert fmts >= ({"qdq"} if kind == "matmul" else {"qdq", "int_dq", "fp16"} if "conv" in kind
                    else {"qdq", "matmulnbits", "fp16"})
