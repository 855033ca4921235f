"""Softmax losses on models that output probabilities (`compiler.sensitivity.softmax_output`):
a model ending in Softmax, or in exp / ReduceSum / Div, gets the traces of the same model
without it (its logits), where reading the probabilities would softmax them twice; the
Gauss-Newton trace of a softmax-output linear model against its closed form; onnxruntime as
the oracle that each test head really is softmax(logits); other outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.special import softmax

from compiler.frontend import load
from compiler.ir import Graph
from compiler.sensitivity import gauss_newton, hawq
from compiler.sensitivity.loss import chunks, loss_notes, loss_outputs, objective
from compiler.sensitivity.softmax_output import loss_tensor

RNG = np.random.default_rng(7)
W1, W2 = RNG.standard_normal((4, 5)) * 0.9, RNG.standard_normal((5, 3)) * 1.5
X = RNG.standard_normal((16, 4)).astype(np.float32)
I64 = TensorProto.INT64


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(
        name + "_v", I64, [len(values)], values))


def _softmax_head(axis: int = -1) -> list[onnx.NodeProto]:
    return [helper.make_node("Softmax", ["y"], ["p"], name="sm", axis=axis)]


def _exp_sum_div_head(shift: bool = True, axis: int = 1) -> list[onnx.NodeProto]:
    """magika's jax2tf softmax: max over the classes, reshaped and broadcast, subtracted;
    exp; sum over the classes, reshaped and broadcast; divide."""
    s = "y"
    nodes = [_const("ax", [axis]), _const("col", [-1, 1] if axis == 1 else [1, -1]),
             helper.make_node("Shape", ["y"], ["ys"])]
    if shift:
        nodes += [helper.make_node("ReduceMax", ["y"], ["m0"], axes=[axis], keepdims=0),
                  helper.make_node("Reshape", ["m0", "col"], ["m1"]),
                  helper.make_node("Expand", ["m1", "ys"], ["m2"]),
                  helper.make_node("Sub", ["y", "m2"], ["s"])]
        s = "s"
    return nodes + [helper.make_node("Exp", [s], ["e"]),
                    helper.make_node("ReduceSum", ["e", "ax"], ["t0"], keepdims=0),
                    helper.make_node("Reshape", ["t0", "col"], ["t1"]),
                    helper.make_node("Div", ["e", "t1"], ["p"])]


def _net(head: list[onnx.NodeProto], batch: int = 1, tail: list[onnx.NodeProto] = (),
         out_shape: list[int] | None = None, opset: int = 13) -> onnx.ModelProto:
    """x [batch, 4] -> MatMul -> Tanh -> MatMul -> logits y [batch, 3] -> `head` -> `tail`."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Tanh", ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2"), *head, *tail]
    out = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape or [batch, 3])],
        [numpy_helper.from_array(w.astype(np.float32), k) for k, w in (("w1", W1), ("w2", W2))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": row[None]})[0] for row in x])


def _traces(g: Graph, outputs: tuple[str, ...], seed: int = 3) -> np.ndarray:
    names = hawq.unique_weights(hawq.check_quantisable(g))
    return gauss_newton.traces(g, chunks(g, X), "kl", outputs, names, tol=0.05, seed=seed,
                               max_iter=4).trace


LOGITS = _net([])


@pytest.mark.parametrize("head", [_softmax_head(), _exp_sum_div_head(),
                                  _exp_sum_div_head(shift=False)],
                         ids=["Softmax", "exp-max/sum/div", "exp/sum/div"])
def test_softmax_output_gets_the_traces_of_its_logits(head: list[onnx.NodeProto]) -> None:
    """onnxruntime: the head is softmax(logits). With the fix the loss reads the logits, and
    the traces are the logits model's (same probes); read as they are, the probabilities get
    a second softmax and other traces."""
    model = _net(head)
    np.testing.assert_allclose(_ort(model, X), softmax(_ort(LOGITS, X), axis=-1), rtol=1e-5)
    g, plain = load(model), load(LOGITS)
    assert loss_outputs(g, "kl", None) == loss_outputs(g, "ce", np.zeros(16)) == ("y",)
    np.testing.assert_array_equal(_traces(g, loss_outputs(g, "kl", None)),
                                  _traces(plain, plain.outputs))
    twice = _traces(g, g.outputs)
    assert np.all(np.abs(twice / _traces(plain, plain.outputs) - 1) > 0.5)


def test_opset11_softmax_reads_the_logits_and_log_softmax_needs_nothing() -> None:
    """Opset-11 Softmax (axis 1 of [1, 3]) is the same softmax. A LogSoftmax output is read
    as it is: softmax(log p) = p, and since the softmax loss's output Hessian H has H 1 = 0,
    (I - 1 p^T)^T H (I - 1 p^T) = H, so its traces are the logits model's (to rounding)."""
    old = load(_net(_softmax_head(axis=1), opset=11))
    assert loss_outputs(old, "kl", None) == ("y",)
    log = load(_net([helper.make_node("LogSoftmax", ["y"], ["p"], axis=-1)]))
    assert loss_outputs(log, "kl", None) == log.outputs and loss_notes(log, "kl", None) == ()
    np.testing.assert_allclose(_traces(log, log.outputs), _traces(load(LOGITS), ("y",)),
                               rtol=1e-5)


def test_a_non_softmax_output_is_read_as_it_is() -> None:
    g = load(LOGITS)
    assert loss_tensor(g, "y").note is None and loss_outputs(g, "kl", None) == ("y",)
    assert loss_notes(g, "kl", None) == ()
    sens = hawq.sensitivity(g, X, tol=0.05, seed=3, max_iter=4)
    np.testing.assert_array_equal(sens.score * np.array([20, 15]), _traces(g, ("y",)))


def _refused(model: onnx.ModelProto, x: np.ndarray, match: str) -> None:
    g = load(model)
    assert loss_outputs(g, "kl", None) == g.outputs
    (note,) = loss_notes(g, "kl", None)
    assert match in note and "reads it as it is" in note


def test_softmax_over_another_axis_is_refused_with_the_reason() -> None:
    """Softmax over the batch axis (2 rows): the losses' classes are the last axis, so the
    output is read as it is, and the note says why; exp / sum / div over axis 0 likewise
    (onnxruntime: it sums each column, not each row)."""
    x = X[:2]
    _refused(_net(_softmax_head(axis=0), batch=2), x, "over axis 0 of rank 2")
    model = _net(_exp_sum_div_head(shift=False, axis=0), batch=2)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0],
                               softmax(_ort(LOGITS, x), axis=0), rtol=1e-5)
    _refused(model, x, "exp / sum / div over axes [0]")


def test_reshape_after_the_softmax_keeps_or_loses_the_class_axis() -> None:
    """Softmax then Reshape [1, 3] -> [1, 1, 3] keeps the classes last: the logits are read;
    Reshape to [3, 1] puts them on the rows: refused."""
    keep = _net(_softmax_head(), tail=[_const("sh", [1, 1, 3]),
                                       helper.make_node("Reshape", ["p", "sh"], ["q"])],
                out_shape=[1, 1, 3])
    assert loss_outputs(load(keep), "kl", None) == ("y",)
    lose = _net(_softmax_head(), tail=[_const("sh", [3, 1]),
                                       helper.make_node("Reshape", ["p", "sh"], ["q"])],
                out_shape=[3, 1])
    _refused(lose, X[:1], "changes the last (class) axis")


def test_division_by_something_else_is_no_softmax() -> None:
    """exp(y) / sum(exp(y)) + 1 over the classes: the divisor is not the row sum."""
    head = [_const("ax", [1]), helper.make_node("Exp", ["y"], ["e"]),
            helper.make_node("ReduceSum", ["e", "ax"], ["t0"], keepdims=1),
            helper.make_node("Constant", [], ["one"], value=helper.make_tensor(
                "one_v", TensorProto.FLOAT, [], [1.0])),
            helper.make_node("Add", ["t0", "one"], ["t1"]),
            helper.make_node("Div", ["e", "t1"], ["p"])]
    g = load(_net(head))
    assert loss_outputs(g, "kl", None) == g.outputs and loss_notes(g, "kl", None) == ()


def test_gauss_newton_trace_of_a_softmax_linear_model_matches_the_closed_form() -> None:
    """p = softmax(W x), mean KL over R = 16 samples: G = (1/R) sum_n J_n^T (diag p_n -
    p_n p_n^T) J_n with J_n = dz_n / dvec(W) = I_C kron x_n^T. The estimate lies within 3 of
    its standard errors of Tr(G); softmaxing p again (the old reading) gives a trace far
    outside them."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"], name="fc"),
         helper.make_node("Softmax", ["z"], ["p"], name="sm", axis=-1)], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(W2[:4].astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = X.astype(np.float64)
    probs = softmax(x @ W2[:4].astype(np.float32).astype(np.float64), axis=-1)

    def exact(q: np.ndarray) -> float:
        jac = [np.kron(np.eye(3), xn[None, :]) for xn in x]
        return sum(np.trace(j.T @ (np.diag(p) - np.outer(p, p)) @ j) for j, p in zip(jac, q)
                   ) / len(x)

    g = load(model)
    sens = hawq.sensitivity(g, X, tol=0.02, max_iter=2000, seed=5)
    trace, rse = float(sens.score[0]) * 12, float(sens.rse[0])
    assert rse < 0.02 and abs(trace - exact(probs)) <= 3 * rse * trace
    assert abs(exact(softmax(probs, axis=-1)) - exact(probs)) > 10 * rse * trace
    assert sens.notes[:2] == ("loss=kl", "loss reads z, the logits of softmax output p")


def test_objective_reads_the_logits_too() -> None:
    """The "hessian" curvature's objective: KL targets and values of the softmax model are the
    logits model's (the reference is the intermediate logits tensor)."""
    soft, plain = objective(load(_net(_softmax_head())), X), objective(load(LOGITS), X)
    assert set(soft.targets[0]) == {"y"}
    for i in range(len(X)):
        np.testing.assert_array_equal(soft.targets[i]["y"], plain.targets[i]["y"])
