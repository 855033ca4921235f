"""Models that output probabilities (a Softmax, or exp / sum / div as jax2tf writes it, e.g.
magika): the sparsity pass's KL reads their logits, as the analysis' loss does, and the
compile's fidelity check scores them as class scores. Oracles: the same model without its
softmax head (its KL computed from the logits by hand) and a plain tensor output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from scipy.special import log_softmax, softmax

from compiler.frontend import load
from edgesim.evaluate import output_kind
from edgesim.fidelity import score_producer
from edgesim.sparsity import output_kl
from tests.compiler.test_loss_softmax_output import (
    W1,
    W2,
    X,
    _exp_sum_div_head,
    _net,
    _softmax_head,
)

HEADS = [_softmax_head(), _exp_sum_div_head(), _exp_sum_div_head(shift=False)]
IDS = ["Softmax", "exp-max/sum/div", "exp/sum/div"]
FEEDS = [{"x": X[i:i + 4]} for i in range(0, len(X), 4)]


def _kl_by_hand(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over rows of KL(softmax(ref) || softmax(logits)), from log-softmaxes."""
    lp, lq = log_softmax(ref_logits, axis=-1), log_softmax(logits, axis=-1)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))


@pytest.mark.parametrize("head", HEADS, ids=IDS)
def test_sparsity_kl_reads_the_logits_behind_a_softmax_output(head: list[onnx.NodeProto]
                                                              ) -> None:
    """KL(softmax(reference) || the model's own probabilities), by hand from the logits; the
    old reading (a second softmax over the probabilities) gives another, smaller figure."""
    g = load(_net(head, batch=4, out_shape=[4, 3]))
    ref = [np.random.default_rng(i).standard_normal((4, 3)).astype(np.float32) * 3
           for i in range(len(FEEDS))]
    logits = [np.tanh(f["x"].astype(np.float64) @ W1) @ W2 for f in FEEDS]
    got = output_kl(g, FEEDS, ref)
    assert got == pytest.approx(np.mean([_kl_by_hand(r, z) for r, z in zip(ref, logits)]),
                                rel=1e-4)
    twice = np.mean([_kl_by_hand(r, softmax(z, axis=-1))  # probabilities read as logits
                     for r, z in zip(ref, logits)])
    assert abs(got - twice) > 0.1 * got


@pytest.mark.parametrize("head", HEADS, ids=IDS)
def test_a_written_out_softmax_is_scored_as_class_scores(head: list[onnx.NodeProto]) -> None:
    g = load(_net(head, batch=4, out_shape=[4, 3]))
    assert score_producer(g, g.outputs[0]) == "softmax"
    assert output_kind(np.zeros((8, 3), np.float32), score_producer(g, g.outputs[0])) \
        == "class_scores"


def test_a_plain_tensor_output_stays_a_tensor() -> None:
    tanh_out = load(_net([helper.make_node("Tanh", ["y"], ["p"])]))
    producer = score_producer(tanh_out, tanh_out.outputs[0])
    assert producer != "softmax"
    assert output_kind(np.zeros((8, 3), np.float32), producer) == "tensor"
