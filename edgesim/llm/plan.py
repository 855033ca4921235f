"""Per-layer weight formats for a decoder: measured sensitivities and an exact budgeted plan.

Sensitivity of layer l at format b is the rise in mean next-byte NLL on calibration text when
only layer l is stored in b (all others float), measured in onnxruntime -- the effect the plan
is judged by, not a proxy. `plan_for_bits` then picks one format per layer minimising the
summed rises under an average-bits budget with the project's exact MCKP solver
(`compiler.allocate.solve`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from compiler.allocate import InfeasibleBudget, solve
from edgesim.errors import UserError
from edgesim.llm.formats import REFERENCE, parse_format
from edgesim.llm.generate import score_text

Builder = Callable[[Mapping[str, str]], bytes]  # format plan -> serialised ONNX model


def layer_sensitivity(build: Builder, names: Sequence[str], choices: Sequence[str],
                      calib: np.ndarray, seq: int = 128) -> np.ndarray:
    """NLL rise of each layer alone in each format, float [L, B] (0 for "fp32")."""
    base = score_text(build({}), calib, seq).nll
    sens = np.zeros((len(names), len(choices)))
    for i, name in enumerate(names):
        for j, fmt in enumerate(choices):
            if fmt != "fp32":
                sens[i, j] = score_text(build({name: fmt}), calib, seq).nll - base
    return sens


def nominal_bits(choices: Sequence[str]) -> np.ndarray:
    """Weight bits of each format without scales: 2 / 4 / 8 / 16 / 32."""
    return np.array([parse_format(c).bits for c in choices], np.float64)


def plan_for_bits(sens: np.ndarray, params: Sequence[int], names: Sequence[str],
                  choices: Sequence[str], avg_bits: float) -> dict[str, str]:
    """One format per layer with the least summed sensitivity at <= `avg_bits` per weight.

    Raises:
        UserError: no plan fits the budget (below the smallest format's bits).
    """
    p = np.asarray(params, np.float64)
    cost = p[:, None] * nominal_bits(choices)[None, :]
    return _plan(sens, cost, avg_bits * p.sum(), names, choices, f"{avg_bits:g} bits")


def plan_for_bytes(sens: np.ndarray, params: Sequence[int], names: Sequence[str],
                   choices: Sequence[str], max_bytes: float,
                   shapes: Sequence[tuple[int, int]] | None = None) -> dict[str, str]:
    """The least-sensitive plan whose stored linears (scales, zero points) fit `max_bytes`,
    exact as emitted given each linear's (in, out) `shapes`.

    Raises:
        UserError: not even the smallest formats fit.
    """
    bpw = np.array([parse_format(c).bytes_per_weight() for c in choices])
    cost = np.asarray(params, np.float64)[:, None] * bpw[None, :] if shapes is None else \
        np.array([[parse_format(c).stored_bytes(k, n) for c in choices] for k, n in shapes])
    return _plan(sens, cost, max_bytes, names, choices, f"{max_bytes:g} bytes")


def plan_for_decode_rate(sens: np.ndarray, params: Sequence[int], names: Sequence[str],
                         choices: Sequence[str], tokens_per_s: float, bandwidth_bps: float,
                         fixed_s: float) -> dict[str, str]:
    """The least-sensitive plan whose memory-bound decode reaches `tokens_per_s`.

    A layer in format b costs params x bytes_per_weight(b) / bandwidth seconds per token
    (`edgesim.llm.phases`: decode streams every weight once); `fixed_s` is the rest of the
    token (KV cache, embeddings, node overheads) at the same thread count.

    Raises:
        UserError: the rate is out of reach even with the smallest formats.
    """
    bpw = np.array([parse_format(c).bytes_per_weight() for c in choices])
    cost = np.asarray(params, np.float64)[:, None] * bpw[None, :] / bandwidth_bps
    return _plan(sens, cost, 1.0 / tokens_per_s - fixed_s, names, choices,
                 f"{tokens_per_s:g} tokens/s")


def plan_for_budget(sens: np.ndarray, cost: np.ndarray, limit: float, names: Sequence[str],
                    choices: Sequence[str], label: str,
                    allowed: np.ndarray | None = None) -> dict[str, str]:
    """The least-sensitive plan whose summed per-layer `cost` [L, B] is at most `limit`
    (`edgesim.llm.budgets.knapsack` turns tok_s / ttft / ram / size / bits into them), among
    the (layer, format) pairs `allowed` [L, B] permits (default: all).

    Raises:
        UserError: no plan meets the budget (`label` names it).
    """
    return _plan(sens, cost, limit, names, choices, label, allowed)


def _plan(sens: np.ndarray, cost: np.ndarray, budget: float, names: Sequence[str],
          choices: Sequence[str], label: str,
          allowed: np.ndarray | None = None) -> dict[str, str]:
    try:
        alloc = solve(sens, cost, budget, allowed)
    except InfeasibleBudget:
        raise UserError(f"budget {label}", "infeasible: no format plan meets it") from None
    return {n: choices[c] for n, c in zip(names, alloc.choice)}


def plan_bytes(plan: Mapping[str, str], params: Mapping[str, int],
               shapes: Mapping[str, tuple[int, int]] | None = None) -> float:
    """Stored bytes of the planned linears (MatMulNBits scales and zero points included):
    exact as emitted given each linear's (in, out) `shapes`, else params x bytes per weight."""
    if shapes is not None:
        return float(sum(parse_format(plan.get(n, "fp32")).stored_bytes(*shapes[n])
                         for n in params))
    return float(sum(params[n] * parse_format(plan.get(n, "fp32")).bytes_per_weight()
                     for n in params))


def avg_bits_bytes(params: Mapping[str, int], avg_bits: float) -> float:
    """Stored bytes that "`avg_bits` average bits" buys: the uniform interpolation between the
    reference formats of the bit widths around it (`formats.REFERENCE`: q2z, q4, q8).

    4 bits is exactly uniform q4's bytes; 3 bits is half the weights in q2z and half in q4 (the
    bytes of a 3-nominal-bit mix of the uniform formats; MatMulNBits has no 3-bit format).

    Raises:
        UserError: `avg_bits` outside the reference widths (2 to 8).
    """
    widths = sorted(REFERENCE)
    if not widths[0] <= avg_bits <= widths[-1]:
        raise UserError(f"{avg_bits:g} bits", f"average bits must be in [{widths[0]}, "
                        f"{widths[-1]}]")
    lo = max(b for b in widths if b <= avg_bits)
    hi = min(b for b in widths if b >= avg_bits)
    t = 0.0 if hi == lo else (avg_bits - lo) / (hi - lo)
    return (1 - t) * _uniform_bytes(params, REFERENCE[lo]) + t * _uniform_bytes(
        params, REFERENCE[hi])


def _uniform_bytes(params: Mapping[str, int], fmt: str) -> float:
    return plan_bytes(dict.fromkeys(params, fmt), params)


def fill_plan(params: Mapping[str, int], order: Sequence[str], low: str, high: str,
              max_bytes: float,
              shapes: Mapping[str, tuple[int, int]] | None = None) -> dict[str, str]:
    """A sensitivity-free mix of two uniform formats: layers in `order` take `high` while the
    plan still fits `max_bytes`, every other layer `low` (the reference mixed plans are
    judged against at a size no single format has).

    Raises:
        UserError: not even every layer in `low` fits.
    """
    plan = dict.fromkeys(params, low)
    if plan_bytes(plan, params, shapes) > max_bytes:
        raise UserError(f"budget {max_bytes:g} bytes", f"infeasible: uniform {low} exceeds it")
    for name in order:
        trial = plan | {name: high}
        if plan_bytes(trial, params, shapes) <= max_bytes:
            plan = trial
    return plan
