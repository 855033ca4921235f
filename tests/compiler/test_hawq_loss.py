"""HAWQ's losses (`compiler.sensitivity.loss`): cotangents vs finite differences, values vs
sklearn and scipy, and the default loss a graph's output implies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from scipy.special import rel_entr, softmax
from sklearn.metrics import log_loss

from compiler.errors import ModelError
from compiler.frontend import load
from compiler.sensitivity.loss import (
    cross_entropy,
    default_loss,
    kl_divergence,
    objective,
    squared_error,
)
from tests.compiler.hawq_models import model


def _fd_grad(f, y: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(y)
    for i in np.ndindex(y.shape):
        e = np.zeros_like(y)
        e[i] = h
        out[i] = (f(y + e) - f(y - e)) / (2 * h)
    return out


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 4), classes=st.integers(2, 5), seed=st.integers(0, 10**6))
def test_loss_cotangents_match_finite_differences(rows: int, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, ref = rng.standard_normal((2, rows, classes)) * 2
    labels = rng.integers(0, classes, rows)
    for loss, target in ((cross_entropy, labels), (kl_divergence, ref), (squared_error, ref)):
        _, cot = loss(y, target)
        fd = _fd_grad(lambda z, f=loss, t=target: f(z, t)[0], y)
        np.testing.assert_allclose(cot, fd, rtol=1e-6, atol=1e-8)


def test_loss_values_match_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(0)
    y, ref = rng.standard_normal((2, 6, 4)) * 3
    labels = np.array([0, 1, 2, 3, 1, 0])
    p = softmax(y, axis=-1)
    assert cross_entropy(y, labels)[0] == pytest.approx(log_loss(labels, p), rel=1e-10)
    kl = rel_entr(softmax(ref, axis=-1), p).sum() / 6
    assert kl_divergence(y, ref)[0] == pytest.approx(kl, rel=1e-10)
    assert squared_error(y, ref)[0] == pytest.approx(((y - ref) ** 2).sum() / 6, rel=1e-12)


def test_default_loss_rule() -> None:
    cls = load(model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [2, 3]},
                      ("y", [2, 4]), {"w": np.ones((3, 4))}))
    assert default_loss(cls, np.zeros(2)) == "ce"
    assert default_loss(cls, None) == "kl"  # one [N, C] output: class scores
    seq = load(model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [2, 5, 3]},
                      ("y", [2, 5, 4]), {"w": np.ones((3, 4))}))
    assert default_loss(seq, None) == "mse"
    with pytest.raises(ModelError, match="labels"):
        objective(cls, np.zeros((2, 3), np.float32), None, loss="ce")
    with pytest.raises(ModelError, match="whole batches"):
        objective(cls, np.zeros((3, 3), np.float32))
