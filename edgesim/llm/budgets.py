"""Decoder budgets (`tok_s=`, `ttft=`, `ram=`, `size=`, `bits=`) as per-layer knapsack costs.

A mixed plan is priced from the uniform plans the phase model predicts
(`edgesim.llm.phases.simulate_llm`, `edgesim.llm.fit.footprint`): with w_l = n_l / sum n the
share of layer l's weights, a plan's decode time per token is sum_l w_l * s(f_l), s(f) the
uniform plan's time in format f (likewise its time to first token). For the memory-bound
decode this is exact in the bytes term (bytes per token are a sum over layers, the fixed parts
-- KV cache, overheads -- are the same in every uniform plan and sum back to themselves since
sum w_l = 1); for the compute-bound prefill it assumes each linear's GEMM time is its share of
the uniform plan's, which holds when the linears' shapes run at the same rate. RAM is exact:
each layer's stored bytes plus what no plan changes (KV cache, activations, runtime, and the
weights outside the plan at the first format's size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgesim.budget import Budget
from edgesim.errors import UserError
from edgesim.llm.config import DecoderConfig
from edgesim.llm.fit import footprint
from edgesim.llm.formats import parse_format
from edgesim.llm.phases import simulate_llm
from hwmodels.cpu import CpuTarget


@dataclass(frozen=True)
class Workload:
    """Where a decoder budget is judged: threads, decode context, prompt length, KV dtype."""

    threads: int = 1
    context: int = 512
    prompt_len: int = 128
    kv_dtype: str = "fp32"


@dataclass(frozen=True)
class Knapsack:
    """Per-layer cost [L, B] of each format and the budget on their sum (both base units,
    negated for a floor so that the sum is always bounded from above)."""

    cost: np.ndarray
    limit: float


def uniform_times(cfg: DecoderConfig, target: CpuTarget, choices: Sequence[str],
                  work: Workload) -> tuple[np.ndarray, np.ndarray]:
    """(decode seconds per token, time to first token) of each uniform format, [B] each."""
    sim = simulate_llm(cfg, target, choices, [work.threads], [work.context], work.prompt_len,
                       work.kv_dtype)
    return sim.decode_s[:, 0, 0], sim.ttft_s[:, 0]


def knapsack(budget: Budget, cfg: DecoderConfig, target: CpuTarget, params: Sequence[int],
             choices: Sequence[str], work: Workload,
             shapes: Sequence[tuple[int, int]] | None = None) -> Knapsack:
    """The budget as per-layer costs of each format (module docstring).

    With the layers' (in, out) `shapes`, `size` and `ram` count each layer's exact emitted
    bytes (`WeightFormat.stored_bytes`: K padded to whole blocks, packed zero points); without,
    params x bytes per weight (the same whenever K is a whole number of blocks).

    Raises:
        UserError: a metric decoders cannot be budgeted in (latency, energy).
    """
    n = np.asarray(params, np.float64)
    share = (n / n.sum())[:, None]
    if budget.metric in ("tok_s", "ttft"):
        decode, ttft = uniform_times(cfg, target, choices, work)
        if budget.metric == "ttft":
            return Knapsack(share * ttft[None, :], budget.value)
        return Knapsack(share * decode[None, :], 1.0 / budget.value)
    bpw = np.array([parse_format(c).bytes_per_weight() for c in choices])
    stored = n[:, None] * bpw if shapes is None else np.array(
        [[parse_format(c).stored_bytes(k, o) for c in choices] for k, o in shapes])
    if budget.metric == "size":
        return Knapsack(stored, budget.value)
    if budget.metric == "bits":
        bits = np.array([parse_format(c).bits for c in choices], np.float64)
        return Knapsack(n[:, None] * bits[None, :], budget.value * n.sum())
    if budget.metric == "ram":   # what the plan does not change, at the first format
        ref = footprint(cfg, choices[0], work.context, work.prompt_len, work.kv_dtype)
        # the reference footprint holds the linears at params x bytes per weight
        return Knapsack(stored, budget.value - (ref.total() - float(n.sum() * bpw[0])))
    raise UserError("--budget", f"{budget.metric} budgets do not apply to decoders; use tok_s, "
                    "ttft, ram, size or bits")


def plan_cost(k: Knapsack, plan: dict[str, str], names: Sequence[str],
              choices: Sequence[str]) -> float:
    """The summed cost of a plan (layer name -> format in `choices`)."""
    cols = [list(choices).index(plan[n]) for n in names]
    return float(k.cost[np.arange(len(names)), cols].sum())
