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

from compiler.allocate import solve
from edgesim.errors import UserError
from edgesim.llm.formats import parse_format
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
    alloc = solve(sens, cost, avg_bits * p.sum())
    if alloc.status != "optimal":
        raise UserError(f"budget {avg_bits} bits", f"infeasible: {alloc.status}")
    return {n: choices[c] for n, c in zip(names, alloc.choice)}


def plan_bytes(plan: Mapping[str, str], params: Mapping[str, int]) -> float:
    """Stored bytes of the planned linears (MatMulNBits scales and zero points included)."""
    return float(sum(params[n] * parse_format(plan.get(n, "fp32")).bytes_per_weight()
                     for n in params))
