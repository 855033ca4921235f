"""Activation ranges chosen per tensor by measured output error: the choice is the brute-force
argmin of the reader's output error (recomputed here in numpy from the ONNX weights), and it
follows the reader -- the same input histogram keeps its outlier channel unclipped when the
weights read it, and clips it when they do not."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from compiler.range_choice import CANDIDATES, choose_methods, with_choices
from tests.compiler.opcheck import graph_model

S, D, N = 64, 16, 6
F = TensorProto.FLOAT


def _weight(outlier_read: bool) -> np.ndarray:
    w = np.random.default_rng(1).standard_normal((D, D)).astype(np.float32) / 4
    w[0] = 2.0 if outlier_read else 0.0  # row 0 of B [in, out] reads input channel 0
    return w


def _model(w: np.ndarray):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    return graph_model(nodes, [("x", F, [1, S, D])], [("y", F, None)], {"w": w})


def _batches() -> list[dict[str, np.ndarray]]:
    """Gaussian channels, and channel 0 a rare large outlier (a few tokens at ~30)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(N):
        x = rng.standard_normal((1, S, D)).astype(np.float32)
        x[0, rng.integers(0, S, 2), 0] = rng.uniform(25.0, 35.0, 2)
        out.append({"x": x})
    return out


def _fake_quant(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """uint8 QuantizeLinear -> DequantizeLinear, written out (ONNX semantics)."""
    q = np.clip(np.rint(x / np.float32(scale)) + zp, 0, 255)
    return ((q - zp) * np.float32(scale)).astype(np.float32)


def _brute_force(stats, w: np.ndarray, batches) -> str:
    errors = {}
    for m in CANDIDATES:
        p = stats.params("x", 8, m)
        errors[m] = sum(float(np.sum(((_fake_quant(b["x"], p.scale, p.zero_point) - b["x"])
                                      @ w.astype(np.float64)) ** 2)) for b in batches)
    return min(CANDIDATES, key=errors.__getitem__)


def _choice(outlier_read: bool) -> tuple[str, str]:
    w = _weight(outlier_read)
    g, batches = load(_model(w)), _batches()
    stats = calibrate(g, batches)
    return choose_methods(g, stats, batches)["x"], _brute_force(stats, w, batches)


def test_the_choice_is_the_brute_force_argmin_and_follows_the_reader() -> None:
    read, read_oracle = _choice(outlier_read=True)
    unread, unread_oracle = _choice(outlier_read=False)
    assert (read, unread) == (read_oracle, unread_oracle)
    assert read == "minmax"      # clipping a channel the weights amplify costs most
    assert unread != "minmax"    # an ignored outlier channel is best clipped


def test_a_tensor_without_weighted_readers_is_scored_by_its_own_error() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    g = load(graph_model(nodes, [("x", F, [1, S, D])], [("y", F, None)], {}))
    batches = _batches()
    stats = calibrate(g, batches, tensors=("x",))
    errors = {}
    for m in CANDIDATES:
        p = stats.params("x", 8, m)
        errors[m] = sum(float(np.sum((_fake_quant(b["x"], p.scale, p.zero_point)
                                      - b["x"]).astype(np.float64) ** 2)) for b in batches)
    assert choose_methods(g, stats, batches) == {"x": min(CANDIDATES, key=errors.__getitem__)}


def test_auto_reads_the_choice_and_falls_back_to_percentile() -> None:
    g = load(_model(_weight(True)))
    stats = calibrate(g, _batches())
    bits = np.full((len(g.layers), 2), 8)
    (layer,) = [la for la in g.layers if la.kind == "linear"]

    def in_scale(s) -> float:
        q = quantize(g, bits, s, QuantOptions(act_method="auto"))
        return q.layer(layer.name).quant.in_scale[0]

    for method in ("minmax", "entropy"):
        chosen = with_choices(stats, {"x": method}, bits=8)
        assert in_scale(chosen) == stats.params("x", 8, method).scale
    assert in_scale(stats) == stats.params("x", 8, "percentile").scale
    assert with_choices(stats, {"x": "minmax"}, bits=4).params("x", 8, "auto") == \
        stats.params("x", 8, "percentile")  # a choice holds for its width only
