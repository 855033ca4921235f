"""The local range choice's reader graph (`reader_graph`): every weighted reader of the
chosen tensors, fed a perturbation of its tensor, without its bias. Its outputs are the
readers' responses in closed form (numpy matmuls here), the errors it gives in onnxruntime
equal the per-reader numpy forward's, and the choice made with it is the same."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from compiler.executor import run
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.range_choice import (
    CANDIDATES,
    _graph_errors,
    candidate_params,
    choose_methods,
    reader_graph,
    tensor_errors,
)
from compiler.range_search import fake_quant_runner
from edgesim import calibration as cal
from edgesim.float_pass import float_pass
from edgesim.loading import load_graph
from edgesim.ranges import _onnxruntime_runner
from tests.compiler.opcheck import graph_model

F = TensorProto.FLOAT
RNG = np.random.default_rng(7)
W1 = RNG.standard_normal((8, 6)).astype(np.float32)     # MatMul B [in, out]
W2 = RNG.standard_normal((5, 6)).astype(np.float32)     # Gemm B, transB: [out, in]
B2 = RNG.standard_normal(5).astype(np.float32)


def _mlp():
    """x @ W1 -> ReLU -> r -> Gemm(W2^T, bias) -> y."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    return graph_model(nodes, [("x", F, [4, 8])], [("y", F, None)],
                       {"w1": W1, "w2": W2, "b2": B2})


def test_the_reader_graph_is_each_reader_on_its_perturbation_without_bias() -> None:
    g = load(_mlp())
    rg = reader_graph(g, ("x", "r", "y"))  # y has no reader: it takes no input
    assert rg is not None and rg.inputs == ("x#d", "r#d")
    dx, dr = RNG.standard_normal((4, 8)).astype(np.float32), RNG.standard_normal(
        (4, 6)).astype(np.float32)
    got = fake_quant_runner(rg)({"x#d": dx, "r#d": dr})
    assert set(got) == set(rg.outputs) and len(rg.outputs) == 2
    out_x, out_r = (got[o] for o in rg.outputs)
    np.testing.assert_allclose(out_x, dx @ W1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_r, dr @ W2.T, rtol=1e-5, atol=1e-5)  # no bias
    assert reader_graph(g, ("y",)) is None


def _errors_both_ways(g, data, stats, tensors):
    params = {t: candidate_params(stats, t, 8, 99.99) for t in tensors}
    rg = reader_graph(g, tensors)
    assert rg is not None
    readers = _onnxruntime_runner(rg)
    for feeds in cal.batches(g, data):
        env = {**feeds, **run(g, feeds, dtype="float32", keep=tensors)}
        fast = _graph_errors(env, tensors, params, rg, readers)
        for t in tensors:
            yield t, fast[t], tensor_errors(g, env, t, params[t])


def test_onnxruntime_reader_errors_equal_the_numpy_forward_on_zoo_models() -> None:
    for name in ("digits_cnn", "digits_transformer"):
        g = load_graph(f"zoo:{name}")
        data = cal.random_samples(g, 2, seed=4)
        stats = float_pass(g, data, stats=True).stats
        tensors = tuple(stats.stats)
        checked = 0
        for t, fast, slow in _errors_both_ways(g, data, stats, tensors):
            assert set(fast) == set(CANDIDATES)
            for m in CANDIDATES:
                np.testing.assert_allclose(fast[m], slow[m], rtol=1e-4, err_msg=f"{name} {t}")
            checked += min(slow.values()) > 0
        assert checked >= len(tensors)  # nonzero errors: the comparison is not of zeros


def test_the_choice_with_the_reader_graph_is_the_numpy_one() -> None:
    for name in ("digits_cnn", "digits_transformer"):
        g = load_graph(f"zoo:{name}")
        data = cal.random_samples(g, 4, seed=6)
        stats = float_pass(g, data, stats=True).stats
        batches = list(cal.batches(g, data))
        params = {t: candidate_params(stats, t, 8, 99.99) for t in stats.stats}
        slow = choose_methods(g, stats, batches, params=params)
        fast = choose_methods(g, stats, batches, params=params, readers=_onnxruntime_runner)
        assert fast == slow and len(set(slow.values())) > 1, name
    g = load(_mlp())
    batches = [{"x": RNG.standard_t(2.0, (4, 8)).astype(np.float32)} for _ in range(3)]
    stats = calibrate(g, batches)
    assert (choose_methods(g, stats, batches, readers=fake_quant_runner)
            == choose_methods(g, stats, batches))
