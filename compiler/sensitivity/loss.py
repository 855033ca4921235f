"""Losses for sensitivity analysis, calibration batching, and a reverse walk over the IR.

Losses (each returns the value and its cotangent d(loss)/d(output); rows are all leading axes,
the last axis is the class / feature axis, and every loss is a mean over rows):

- "ce": cross-entropy of softmax(logits) with integer labels;
- "kl": KL(p_ref || p) of softmax(output) to softmax(reference), the unquantised model's own
  output on the same inputs (no labels needed);
- "mse": sum over the last axis of the squared error to the target, mean over rows:
  L = (1/R) sum_r ||y_r - t_r||^2. The target is the labels if given, else the reference.

Default rule (`loss=None`): "ce" when labels are given; otherwise "kl" when the model has a
single output of shape [N, C] with C > 1 (class scores); otherwise "mse" over every float
output. CE and KL use the first output; where it is a softmax, its logits
(`compiler.sensitivity.softmax_output`: softmax again would not be the model's probabilities).

Gradients come from `executor.backward`, the one reverse walk: it starts from a forward pass
already kept (so the loss can look at the outputs first without a second forward) and lets
HAWQ and LRP change the per-layer rule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np

from compiler import executor
from compiler.errors import ModelError
from compiler.executor import Arrays, Rule, backward, vjp_rule
from compiler.ir import Graph
from compiler.sensitivity.softmax_output import loss_tensor

# rule(layer, output cotangents, inputs, outputs) -> one cotangent (or None) per input


def cross_entropy(y: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over rows of -log softmax(y)[label], and its cotangent (softmax - onehot) / R."""
    from scipy.special import log_softmax  # here: mse losses never need scipy (0.1 CPU-s)

    logp = log_softmax(y, axis=-1)
    rows = int(np.prod(y.shape[:-1], dtype=np.int64))
    idx = np.asarray(labels, np.int64)[..., None]
    cot = np.exp(logp)
    np.put_along_axis(cot, idx, np.take_along_axis(cot, idx, -1) - 1.0, -1)
    return float(-np.take_along_axis(logp, idx, -1).sum() / rows), cot / rows


def kl_divergence(y: np.ndarray, reference: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over rows of KL(softmax(reference) || softmax(y)); cotangent (p - p_ref) / R."""
    from scipy.special import log_softmax

    logp, logq = log_softmax(y, axis=-1), log_softmax(reference, axis=-1)
    rows = int(np.prod(y.shape[:-1], dtype=np.int64))
    q = np.exp(logq)
    return float((q * (logq - logp)).sum() / rows), (np.exp(logp) - q) / rows


def squared_error(y: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """(1/R) sum ||y_r - t_r||^2 over rows r; cotangent 2 (y - t) / R."""
    rows = int(np.prod(y.shape[:-1], dtype=np.int64)) if y.ndim else 1
    diff = y - np.asarray(target, y.dtype)
    return float(np.vdot(diff, diff) / rows), 2.0 * diff / rows


LOSSES: Mapping[str, Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]] = {
    "ce": cross_entropy, "kl": kl_divergence, "mse": squared_error,
}


def default_loss(g: Graph, labels: object) -> str:
    """The loss `loss=None` picks (see the module docstring)."""
    if labels is not None:
        return "ce"
    out = g.types[g.outputs[0]].shape
    return "kl" if len(g.outputs) == 1 and len(out) == 2 and out[1] > 1 else "mse"


# ----------------------------------------------------------------------------------------------
# Calibration data in chunks of the graph's static batch.


def as_feeds(g: Graph, calib_inputs: np.ndarray | Arrays) -> dict[str, np.ndarray]:
    """Calibration inputs by name; a bare array feeds a single-input model."""
    if isinstance(calib_inputs, Mapping):
        return {k: np.asarray(v) for k, v in calib_inputs.items()}
    if len(g.inputs) != 1:
        raise ModelError("calib_inputs", f"the model takes {list(g.inputs)}: pass a mapping")
    return {g.inputs[0]: np.asarray(calib_inputs)}


def _batches_of(want: tuple[int, ...], got: tuple[int, ...], axis: int | None) -> int | None:
    """How many batches of shape `want` `got` holds along the batch `axis` (None: not whole)."""
    if got == want:
        return 1
    if axis is None or len(got) != len(want) or want[axis] <= 0:
        return None
    same = all(a == b for i, (a, b) in enumerate(zip(got, want)) if i != axis)
    return got[axis] // want[axis] if same and got[axis] % want[axis] == 0 else None


def chunk_count(g: Graph, feeds: Arrays) -> int:
    """How many graph-batch-sized chunks the calibration set splits into (samples along each
    input's batch axis, `Graph.batch_axis`)."""
    counts = set()
    for name in g.inputs:
        want, got = g.types[name].shape, np.shape(feeds[name]) if name in feeds else None
        if got is None:
            raise ModelError("calib_inputs", f"missing input {name!r}")
        n = _batches_of(want, got, g.batch_axis(name))
        if n is None:
            raise ModelError(f"calib_inputs[{name}]", f"shape {got} is not whole batches of {want}")
        if g.batch_axis(name) is not None:
            counts.add(n)
    if len(counts) > 1:
        raise ModelError("calib_inputs", "inputs hold different numbers of samples")
    return counts.pop() if counts else 1


def split(x: np.ndarray, parts: int, axis: int | None = 0) -> list[np.ndarray]:
    """`x` cut into `parts` equal chunks along `axis` (whole if `parts` is 1 or `axis` is
    None: an input without a batch axis feeds every chunk)."""
    return [x] * parts if parts == 1 or axis is None else np.split(np.asarray(x), parts, axis)


def chunks(g: Graph, calib_inputs: np.ndarray | Arrays) -> tuple[dict[str, np.ndarray], ...]:
    """Feeds of each graph-batch-sized chunk of the calibration set."""
    feeds = as_feeds(g, calib_inputs)
    parts = chunk_count(g, feeds)
    pieces = {name: split(feeds[name], parts, g.batch_axis(name)) for name in g.inputs}
    return tuple({name: pieces[name][i] for name in g.inputs} for i in range(parts))


# ----------------------------------------------------------------------------------------------
# The objective: loss of the model over the calibration chunks, in float64.


@dataclass(frozen=True)
class Objective:
    """A loss over calibration chunks. `graph` holds float64 weights; `targets[i]` maps each
    output the loss reads to chunk i's labels or reference outputs."""

    graph: Graph
    chunks: tuple[dict[str, np.ndarray], ...]
    targets: tuple[dict[str, np.ndarray], ...]
    loss: str

    def value(self, i: int, env: Arrays) -> tuple[float, dict[str, np.ndarray]]:
        """Loss of chunk `i` from its forward tensors, and the output cotangents."""
        total, cots = 0.0, {}
        for name, target in self.targets[i].items():
            v, c = LOSSES[self.loss](env[name], target)
            total, cots[name] = total + v, c
        return total, cots


def float64_weights(g: Graph) -> Graph:
    """`g` with every float weight in float64 (converted once, not at every forward)."""
    weights = {k: (np.asarray(w, np.float64) if np.asarray(w).dtype.kind == "f" else w)
               for k, w in g.weights.items()}
    return replace(g, weights=weights)


def _float_outputs(g: Graph) -> tuple[str, ...]:
    return tuple(o for o in g.outputs if np.dtype(g.types[o].dtype).kind == "f")


SOFTMAX_LOSSES = ("ce", "kl")  # losses that apply a softmax to what they read


def _read_outputs(g: Graph, loss: str, labels: object) -> tuple[str, ...]:
    if loss == "ce" or (loss == "mse" and labels is not None):
        return g.outputs[:1]
    return _float_outputs(g)[:1] if loss == "kl" else _float_outputs(g)


def loss_outputs(g: Graph, loss: str, labels: object) -> tuple[str, ...]:
    """The tensors the loss reads: the first output for "ce" and "kl" (its logits where it is
    a softmax, `softmax_output.loss_tensor`) and for "mse" against labels, every float output
    for "mse" against the reference."""
    names = _read_outputs(g, loss, labels)
    return tuple(loss_tensor(g, n).tensor for n in names) if loss in SOFTMAX_LOSSES else names


def loss_notes(g: Graph, loss: str, labels: object) -> tuple[str, ...]:
    """For the analysis notes: which tensor a softmax loss reads where it is not the output
    itself, or why a softmax output is read as it is."""
    if loss not in SOFTMAX_LOSSES:
        return ()
    notes = (loss_tensor(g, n).note for n in _read_outputs(g, loss, labels))
    return tuple(n for n in notes if n is not None)


def _targets(g: Graph, feeds: Arrays, labels: np.ndarray | None, loss: str
             ) -> dict[str, np.ndarray]:
    names = loss_outputs(g, loss, labels)
    if labels is not None and loss in ("ce", "mse"):
        return {names[0]: labels}
    ref = executor.run(g, feeds, dtype="float64", keep=names)  # logits may be intermediate
    return {name: ref[name] for name in names}


def check_loss(g: Graph, loss: str, labels: object) -> None:
    """Raise ModelError for an unknown loss, cross-entropy without labels, or no float output."""
    if loss not in LOSSES:
        raise ModelError("loss", f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    if loss == "ce" and labels is None:
        raise ModelError("loss", "cross-entropy needs labels")
    if not _float_outputs(g):
        raise ModelError(g.name, "the model has no float output to take a loss of")


def check_label_rows(labels: object, samples: int) -> None:
    """Raise ModelError unless `labels` (when given) has one row per calibration sample."""
    if labels is not None and len(np.asarray(labels)) != samples:
        raise ModelError("labels", f"{len(np.asarray(labels))} rows for {samples} calibration "
                         "samples")


def objective(g: Graph, calib_inputs: np.ndarray | Arrays, labels: np.ndarray | None = None,
              loss: str | None = None) -> Objective:
    """The loss of `g` on the calibration set (see the module docstring for `loss`).

    Raises:
        ModelError: on a bad loss name, missing labels, or inputs that are not whole batches.
    """
    loss = default_loss(g, labels) if loss is None else loss
    check_loss(g, loss, labels)
    g64 = float64_weights(g)
    parts = chunks(g64, calib_inputs)
    check_label_rows(labels, sum(len(next(iter(p.values()))) for p in parts))
    label_parts = split(labels, len(parts)) if labels is not None else [None] * len(parts)
    targets = tuple(_targets(g64, f, lab, loss) for f, lab in zip(parts, label_parts))
    return Objective(g64, parts, targets, loss)


# ----------------------------------------------------------------------------------------------
# Reverse walk.


def value_and_grad(obj: Objective, weights: Arrays, wrt: Collection[str],
                   rule_for: Callable[[int], Rule] | None = None
                   ) -> tuple[float, dict[str, np.ndarray]]:
    """Mean loss over the chunks with `weights` replacing the graph's, and its gradient.

    Args:
        obj: the objective.
        weights: replacement values of some weights (float64).
        wrt: weight names to return gradients of.
        rule_for: chunk index -> backward rule (default: the ops' vjp rules).

    Returns:
        The loss and d(loss)/d(w) for each name in `wrt` (zeros where unreached).
    """
    g = replace(obj.graph, weights={**obj.graph.weights, **weights})
    total, grads = 0.0, {name: np.zeros(np.shape(g.weights[name])) for name in wrt}
    for i, feeds in enumerate(obj.chunks):
        env = executor.run(g, feeds, dtype="float64", keep=True)
        value, cots = obj.value(i, env)
        rule = vjp_rule if rule_for is None else rule_for(i)
        got = backward(g, env, cots, rule)
        total += value
        for name in wrt:
            if name in got:
                grads[name] += got[name]
    n = len(obj.chunks)
    return total / n, {name: gr / n for name, gr in grads.items()}
