"""SmoothQuant migration: the float function is unchanged (against the executor before the
pass), the scales follow eq. 4 of the paper, and per-tensor 8-bit activations of an
outlier-channel input lose less after migration."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from compiler import activation_quant as A
from compiler import quantizers as Q
from compiler.executor import run
from compiler.frontend import load
from compiler.passes.smooth_quant import channel_absmax, sites, smooth, smoothing_scales
from compiler.verify import verify
from tests.compiler.opcheck import graph_model

RNG = np.random.default_rng(5)
D, S = 16, 12
F = TensorProto.FLOAT


def _model(residual: bool = False):
    """x -> LayerNorm -> (q, k projections) -> q + k [+ the LN output, if residual]."""
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], axis=-1),
             helper.make_node("MatMul", ["h", "wq"], ["q0"]),
             helper.make_node("Add", ["q0", "bq"], ["q"]),
             helper.make_node("MatMul", ["h", "wk"], ["k"]),
             helper.make_node("Add", ["q", "k"], ["y0" if residual else "y"])]
    if residual:
        nodes.append(helper.make_node("Add", ["y0", "h"], ["y"]))
    gamma = np.ones(D, np.float32)
    gamma[[3, 9]] = 40.0  # outlier channels, as LayerNorm gains make them in transformers
    inits = {"g": gamma, "b": RNG.standard_normal(D).astype(np.float32) * 0.1,
             "wq": RNG.standard_normal((D, D)).astype(np.float32) / 4,
             "bq": RNG.standard_normal(D).astype(np.float32),
             "wk": RNG.standard_normal((D, D)).astype(np.float32) / 4}
    return graph_model(nodes, [("x", F, [1, S, D])], [("y", F, None)], inits)


def _batches(n: int) -> list[dict[str, np.ndarray]]:
    return [{"x": RNG.standard_normal((1, S, D)).astype(np.float32)} for _ in range(n)]


def test_migration_leaves_the_float_function_unchanged() -> None:
    g = load(_model())
    (site,) = sites(g)
    sg = smooth(g, channel_absmax(g, _batches(4)), alpha=0.5)
    verify(sg)
    assert any(not np.array_equal(sg.weights[t], g.weights[t]) for t in g.weights)
    for feeds in _batches(3):
        np.testing.assert_allclose(run(sg, feeds)["y"], run(g, feeds)["y"], rtol=1e-5,
                                   atol=1e-5)
    # in float64 only the float32 storage of the rescaled weights (one rounding each) remains
    feeds = {"x": RNG.standard_normal((1, S, D))}
    ref = run(g, feeds, dtype="float64")["y"]
    np.testing.assert_allclose(run(sg, feeds, dtype="float64")["y"], ref, rtol=1e-6,
                               atol=1e-6 * np.abs(ref).max())


def test_scales_follow_the_paper() -> None:
    x, w = np.array([100.0, 1.0, 4.0]), np.array([0.25, 1.0, 4.0])
    np.testing.assert_allclose(smoothing_scales(x, w, 0.5), np.sqrt(x) / np.sqrt(w))
    np.testing.assert_allclose(smoothing_scales(x, w, 1.0), x)  # all difficulty to weights
    # after migration the activation channel maxima equal the weight column maxima at 0.5
    s = smoothing_scales(x, w, 0.5)
    np.testing.assert_allclose(x / s, w * s)


def test_other_readers_read_the_output_multiplied_back() -> None:
    """A post-LN block's residual Add reads the LayerNorm output too: it gets it times s."""
    g = load(_model(residual=True))
    assert len(sites(g)) == 1
    sg = smooth(g, channel_absmax(g, _batches(4)), alpha=0.5)
    verify(sg)
    assert len(sg.layers) == len(g.layers) + 1
    assert any(layer.name.endswith(".unsmooth") for layer in sg.layers)
    for feeds in _batches(3):
        np.testing.assert_allclose(run(sg, feeds)["y"], run(g, feeds)["y"], rtol=1e-5,
                                   atol=1e-4)


def test_a_norm_read_by_no_linear_layer_is_not_a_site() -> None:
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], axis=-1),
             helper.make_node("Relu", ["h"], ["y"])]
    inits = {"g": np.ones(D, np.float32), "b": np.zeros(D, np.float32)}
    assert sites(load(graph_model(nodes, [("x", F, [1, S, D])], [("y", F, None)], inits))) == {}


def _w8a8_error(g, batches: list[dict[str, np.ndarray]]) -> float:
    """Squared error of the q projection with per-tensor minmax uint8 activations and
    per-channel int8 weights, against float."""
    lin = next(layer for layer in g.layers if layer.kind == "linear")
    w = g.weights[lin.inputs[1]]
    wq = Q.fake_quant_weight(w, 8, "per_channel", axis=0)
    xs = [run(g, f, keep=(lin.inputs[0],))[lin.inputs[0]] for f in batches]
    stats = A.range_stats(np.concatenate([x.ravel() for x in xs]))
    p = A.activation_params(stats, 8, "minmax")
    err = 0.0
    for x in xs:
        xq = A.fake_quant_activation(x, p.scale, p.zero_point, 8, False)
        err += float(np.sum((xq @ wq.T - x @ w.T) ** 2))
    return err


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_migration_lowers_w8a8_error_with_outlier_channels(alpha: float) -> None:
    g, calib = load(_model()), _batches(8)
    sg = smooth(g, channel_absmax(g, calib), alpha)
    verify(sg)
    assert _w8a8_error(sg, calib) < 0.5 * _w8a8_error(g, calib)


def test_outlier_sites_pick_channels_far_above_the_median() -> None:
    from compiler.passes.smooth_quant import OUTLIER_RATIO, outlier_ratio, outlier_sites

    flat = np.array([1.0, 1.2, 0.9, 1.1, 1.3])       # max / median = 1.3 / 1.1
    spiky = np.array([1.0, 1.2, 0.9, 1.1, 30.0])      # 30 / 1.1
    assert outlier_ratio(flat) == pytest.approx(1.3 / 1.1)
    assert outlier_ratio(spiky) == pytest.approx(30.0 / 1.1)
    assert outlier_ratio(np.array([0.0, 0.0, 2.0])) == np.inf  # dead median channel
    assert list(outlier_sites({"a": flat, "b": spiky})) == ["b"]
    edge = np.array([1.0, 1.0, OUTLIER_RATIO])
    assert list(outlier_sites({"e": edge})) == ["e"]  # the threshold itself counts
