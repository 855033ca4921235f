"""LRP: conservation layer to layer on bias-free ReLU networks (MLP, CNN with a residual add and
pooling), LRP-0 = gradient x input (central finite differences) on those networks, z+ giving
nonnegative conserved relevance, and the sensitivity built from relevance shares."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import load
from compiler.sensitivity import lrp, quant_error
from edgesim import zoo

TINY_EPS = 1e-9


def _model(nodes: list, x_shape: list[int], out: tuple[str, list[int]],
           weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _mlp(seed: int = 0):
    """Bias-free ReLU MLP: 6 -> 8 -> 7 -> 4."""
    rng = np.random.default_rng(seed)
    w = {"w1": rng.standard_normal((6, 8)), "w2": rng.standard_normal((8, 7)),
         "w3": rng.standard_normal((7, 4))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Relu", ["h2"], ["a2"], name="r2"),
             helper.make_node("MatMul", ["a2", "w3"], ["y"], name="fc3")]
    g = load(_model(nodes, [5, 6], ("y", [5, 4]), w))
    return g, rng.standard_normal((5, 6)).astype(np.float32)


def _cnn(seed: int = 0):
    """Bias-free ReLU CNN: conv-relu-maxpool, conv + residual add, relu, GAP, flatten, gemm."""
    rng = np.random.default_rng(seed)
    w = {"c1": rng.standard_normal((4, 2, 3, 3)) * 0.5, "c2": rng.standard_normal((4, 4, 3, 3))
         * 0.3, "fc": rng.standard_normal((3, 4))}
    nodes = [helper.make_node("Conv", ["x", "c1"], ["z1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["z1"], ["a1"], name="r1"),
             helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2],
                              name="pool"),
             helper.make_node("Conv", ["p1", "c2"], ["z2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Add", ["z2", "p1"], ["s"], name="residual"),
             helper.make_node("Relu", ["s"], ["a2"], name="r2"),
             helper.make_node("GlobalAveragePool", ["a2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1, name="fc")]
    g = load(_model(nodes, [3, 2, 6, 6], ("y", [3, 3]), w))
    return g, rng.standard_normal((3, 2, 6, 6)).astype(np.float32)


NETS = {"mlp": _mlp, "cnn": _cnn}


def _seed_total(g, x: np.ndarray) -> float:
    """Output relevance: each row's largest logit (computed here from the forward pass)."""
    return float(run(g, {"x": x}, dtype="float64")["y"].max(axis=1).sum())


# Tensors every path from input to output crosses: relevance summed over each equals the output
# relevance. In the CNN the residual branch's conv2 output carries only a share, and p1 sums
# the share that comes back through conv2 and the share of the skip path.
CUTS = {"mlp": ("y", "a2", "h2", "a1", "h1", "x"),
        "cnn": ("y", "f", "gap", "a2", "s", "p1", "a1", "z1", "x")}


@pytest.mark.parametrize("net", sorted(NETS))
def test_epsilon_relevance_is_conserved_layer_to_layer(net: str) -> None:
    g, x = NETS[net]()
    total = _seed_total(g, x)
    rel = lrp.relevance(g, {"x": x}, eps=TINY_EPS)
    for t in CUTS[net]:
        assert rel[t].sum() == pytest.approx(total, rel=1e-3), t


def test_residual_add_splits_relevance_in_proportion() -> None:
    g, x = _cnn()
    rel = lrp.relevance(g, {"x": x}, eps=TINY_EPS)
    env = run(g, {"x": x}, dtype="float64", keep=True)
    share = env["z2"] / env["s"]  # z-rule for a sum: R_a = a / (a + b) * R
    np.testing.assert_allclose(rel["z2"], share * rel["s"], rtol=1e-6, atol=1e-9)


def _fd_input_gradient(g, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d(sum of each row's winning logit)/dx by central differences (winners held fixed)."""
    x64 = x.astype(np.float64)
    winners = run(g, {"x": x}, dtype="float64")["y"].argmax(axis=1)

    def f(z: np.ndarray) -> float:
        y = run(g, {"x": z}, dtype="float64")["y"]
        return float(y[np.arange(len(y)), winners].sum())

    grad = np.zeros_like(x64)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x64)
        e[i] = h
        grad[i] = (f(x64 + e) - f(x64 - e)) / (2 * h)
    return grad


@pytest.mark.parametrize("net", sorted(NETS))
def test_lrp0_equals_gradient_times_input(net: str) -> None:
    # On bias-free ReLU networks (with max- and average-pooling) the LRP-0 rule equals
    # gradient x input (Montavon et al. 2019, Sec. 10.2.2); the gradient here is by finite
    # differences of the forward pass.
    g, x = NETS[net]()
    rel = lrp.relevance(g, {"x": x}, eps=TINY_EPS, keep=["x"])
    np.testing.assert_allclose(rel["x"], x * _fd_input_gradient(g, x), rtol=1e-4, atol=1e-6)


def test_zplus_relevance_is_nonnegative_and_conserved() -> None:
    g, x = _mlp()
    row_seed = run(g, {"x": x}, dtype="float64")["y"].max(axis=1)
    rel = lrp.relevance(g, {"x": x}, eps=TINY_EPS, rule="zplus")
    for t in ("a1", "a2"):  # inputs of the z+ layers (after ReLU)
        # z+ shares with positive weights only: every entry keeps the sign of its row's seed
        assert np.all(rel[t] * row_seed[:, None] >= 0.0)
        np.testing.assert_allclose(rel[t].sum(axis=1), row_seed, rtol=1e-6)


def test_sensitivity_on_digits_transformer() -> None:
    data = zoo.load_digits_data()
    model = zoo.build("digits_transformer")
    g = load(model, {"input": (40, 1, 8, 8)})
    sens = lrp.sensitivity(g, data["x_calib"][:80], bits=(3, 4, 8))
    # oracle: the ONNX graph's Gemm nodes and MatMul nodes with a constant weight
    inits = {i.name for i in model.graph.initializer}
    n_weighted = sum(n.op_type == "Gemm" or (n.op_type == "MatMul" and n.input[1] in inits)
                     for n in model.graph.node)
    assert len(sens.layers) == n_weighted
    assert sens.omega.shape == (n_weighted, 3) and sens.iterations == 2
    assert np.all(sens.score > 0)
    assert np.all(np.diff(sens.omega, axis=1) < 0)  # more bits, less error


def test_unknown_rule_is_a_model_error() -> None:
    g, x = _mlp()
    with pytest.raises(ModelError, match="rule"):
        lrp.relevance(g, {"x": x}, rule="alpha")


def test_chain_contributions_are_equal_so_omega_is_relative_error() -> None:
    # In a bias-free chain every layer carries all the (conserved) relevance, and with z+ it
    # keeps its row's sign, so |R| sums alike at every layer's output: each of the three layers
    # has contribution 1/3 and omega is a third of the relative weight error.
    g, x = _mlp()
    sens = lrp.sensitivity(g, x, bits=(4, 8), eps=TINY_EPS, rule="zplus")
    for name, row in zip(sens.layers, sens.omega):
        w = np.asarray(g.weights[g.layer(name).inputs[1]], np.float64)
        rel_err = [quant_error(g.layer(name), w, b) / (w * w).sum() for b in (4, 8)]
        np.testing.assert_allclose(row, np.array(rel_err) / 3, rtol=1e-3)


def test_one_lrp_rule_table_covers_every_layer_kind() -> None:
    # the table lives in lrp.RULES only (issue 19: OpDef.relevance was a second, unused home)
    from compiler.ir import KINDS
    from compiler.ops.opdef import OpDef
    assert sorted(set(KINDS) - set(lrp.RULES)) == []
    assert "relevance" not in {f.name for f in dataclasses.fields(OpDef)}


def test_gather_nd_moves_relevance_back_to_the_gathered_entries() -> None:
    # y = GatherND(x @ w, [[0, 1], [0, 3]]): rows 1 and 3 of h get all of y's relevance
    rng = np.random.default_rng(3)
    w = {"w": rng.standard_normal((3, 3)), "idx": np.array([[0, 1], [0, 3]])}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
         helper.make_node("GatherND", ["h", "idx"], ["y"], name="g")], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w["w"].astype(np.float32), "w"),
         numpy_helper.from_array(w["idx"].astype(np.int64), "idx")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    g = load(model)
    x = rng.standard_normal((1, 4, 3)).astype(np.float32)
    total = float(run(g, {"x": x}, dtype="float64")["y"].max(axis=1).sum())
    rel = lrp.relevance(g, {"x": x}, eps=TINY_EPS)
    assert rel["h"].sum() == pytest.approx(total, rel=1e-6)
    assert np.all(rel["h"][0, [0, 2]] == 0.0)
    assert rel["x"].sum() == pytest.approx(total, rel=1e-3)


# --- time budget ------------------------------------------------------------------------------

def _chunk_clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fake clock that advances one second per chunk LRP propagates (work counted, not
    timed): returns the clock's one-element state."""
    now = [0]
    real = lrp._shares

    def counted(*args, **kwargs):
        now[0] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(lrp, "_shares", counted)
    return now


def _mlp_calib(chunks: int) -> tuple[object, np.ndarray]:
    g, _ = _mlp()
    x = np.random.default_rng(7).standard_normal((5 * chunks, 6)).astype(np.float32)
    return g, x


def _share(g, x: np.ndarray, layer: str) -> float:
    """Oracle: one chunk's |relevance| at the layer's output over its seeds' |relevance|."""
    out = g.layer(layer).outputs[0]
    rel = lrp.relevance(g, {"x": x}, keep=[out, "y"], dtype="float32")
    y = run(g, {"x": x}, dtype="float32")["y"]
    seed = np.where(y == y.max(axis=-1, keepdims=True), y, 0.0)
    return float(np.abs(rel[out]).sum() / np.abs(seed).sum())


def test_budget_stops_lrp_between_chunks_and_reports_the_precision(monkeypatch) -> None:
    """8 chunks at one (fake) second each: a 3 s budget is used up after the third chunk, so
    3 chunks stand for all 8: the scores are those of an unbounded analysis of their rows, the
    error is the spread of their shares (checked against relevance() chunk by chunk)."""
    g, x = _mlp_calib(8)
    now = _chunk_clock(monkeypatch)
    sens = lrp.sensitivity(g, x, bits=(4, 8), budget_s=3, clock=lambda: now[0])
    assert now[0] == 3 and sens.cut_short and sens.iterations == 3
    assert any("analysis budget 3 CPU-s used up after 3 of 8 chunks" in n for n in sens.notes)
    first = lrp.sensitivity(g, x[:15], bits=(4, 8))
    np.testing.assert_array_equal(sens.score, first.score)
    shares = np.array([[_share(g, x[5 * i:5 * i + 5], name) for name in sens.layers]
                       for i in range(3)])
    rse = shares.std(axis=0, ddof=1) / np.sqrt(3) / shares.mean(axis=0)
    np.testing.assert_allclose(sens.rse, rse, rtol=1e-4, atol=1e-12)
    # the hidden layers' shares vary from chunk to chunk; the output layer's is always 1
    assert np.all(sens.rse[:2] > 0.01) and sens.rse[2] < 1e-6


def test_lrp_budget_keeps_two_chunks_and_a_generous_one_changes_nothing(monkeypatch) -> None:
    g, x = _mlp_calib(8)
    free = lrp.sensitivity(g, x, bits=(4, 8))
    now = _chunk_clock(monkeypatch)
    spent = lrp.sensitivity(g, x, bits=(4, 8), budget_s=0, clock=lambda: now[0])
    assert spent.iterations == 2 and spent.cut_short and np.all(np.isfinite(spent.rse))
    now[0] = 0
    sens = lrp.sensitivity(g, x, bits=(4, 8), budget_s=1e6, clock=lambda: now[0])
    assert now[0] == 8 and not sens.cut_short and not free.cut_short
    np.testing.assert_array_equal(sens.score, free.score)
    np.testing.assert_array_equal(sens.rse, free.rse)


def test_compile_analysis_budget_reaches_lrp() -> None:
    """edgesim's `analysis_budget_s` bounds LRP: a zero budget covers the least chunks."""
    from edgesim.allocation import sensitivity

    g, x = _mlp_calib(8)
    sens = sensitivity(g, "lrp", {"x": x}, weight_bits=(4, 8), analysis_budget_s=0.0)
    assert sens.iterations == lrp.MIN_CHUNKS and sens.cut_short
