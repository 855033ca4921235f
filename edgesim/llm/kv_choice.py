"""The KV-cache dtype as a plan choice: the budgeted linear plan under each KV dtype, and the
one with the lower objective that meets the budget.

The budget prices differently per KV dtype (an fp16 cache halves the cache's RAM and its
decode bytes per token, `edgesim.llm.budgets`), so each dtype gets its own knapsack and its
own least-sensitive plan. An option's objective is its plan's summed omega plus the KV dtype's
own harm, measured once in onnxruntime on the calibration text with the float model: twice
the mean squared error of its logits to the fp32-cache model's (per row, summed over the
vocabulary) -- the quantity HAWQ's omega estimates for a weight change (twice the loss rise of
its squared-logit loss, `edgesim.llm.sensitivity`). LRP's omega is a relevance share, not a
loss, so under LRP the same harm is added as is (report.md shows both parts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgesim.budget import Budget
from edgesim.errors import UserError
from edgesim.llm.budgets import Workload, knapsack
from edgesim.llm.config import DecoderConfig
from edgesim.llm.embed_choice import Table, with_table
from edgesim.llm.harm import HARM_SEQ, logit_harm
from edgesim.llm.plan import plan_for_budget
from hwmodels.cpu import CpuTarget

KV_DTYPES = ("fp32", "fp16")


@dataclass(frozen=True)
class KvOption:
    """One KV dtype's outcome: its plan's summed omega, the dtype's own measured harm, and
    whether a plan met the budget (objective = omega + harm; None when infeasible)."""

    kv_dtype: str
    feasible: bool
    plan_omega: float | None
    harm: float
    plan: Mapping[str, str]

    @property
    def objective(self) -> float:
        """Summed omega plus harm; inf when no plan met the budget."""
        return self.plan_omega + self.harm if self.plan_omega is not None else float("inf")


def kv_harm(build: Callable[[str], bytes], calib: np.ndarray, kv_dtype: str,
            seq: int = HARM_SEQ) -> float:
    """2 x mean over rows of ||logits(kv_dtype) - logits(fp32)||^2 on `seq`-token windows of
    `calib`, both float-weight models built by `build(kv_dtype)`, run in onnxruntime."""
    if kv_dtype == "fp32":
        return 0.0
    return logit_harm(build("fp32"), build(kv_dtype), calib, seq)


def kv_option(budget: Budget, cfg: DecoderConfig, target: CpuTarget, params: Sequence[int],
              omega: np.ndarray, names: Sequence[str], choices: Sequence[str],
              work: Workload, harm: float, table: Table | None = None,
              shapes: Sequence[tuple[int, int]] | None = None) -> KvOption:
    """The least-sensitive plan under `budget` with the cache in `work.kv_dtype`, the
    embedding table a choice when `table` is given (`edgesim.llm.embed_choice`); bytes exact
    given the linears' (in, out) `shapes` (`budgets.knapsack`)."""
    k = knapsack(budget, cfg, target, params, choices, work, shapes)
    p = with_table(k, omega, names, choices, table, budget, cfg, target, work)
    try:
        plan = plan_for_budget(p.sens, p.cost, p.limit, p.names, p.choices, str(budget),
                               p.allowed)
    except UserError:
        return KvOption(work.kv_dtype, False, None, harm, {})
    cols = [p.choices.index(plan[n]) for n in p.names]
    return KvOption(work.kv_dtype, True, float(p.sens[np.arange(len(p.names)), cols].sum()),
                    harm, plan)


def choose_kv(options: Sequence[KvOption], budget: Budget) -> KvOption:
    """The feasible option with the least objective (the first listed on a tie).

    Raises:
        UserError: no KV dtype has a plan that meets the budget.
    """
    ok = [o for o in options if o.feasible]
    if not ok:
        raise UserError(f"budget {budget}", "infeasible: no format plan meets it under any KV "
                        f"cache dtype ({', '.join(o.kv_dtype for o in options)})")
    return min(ok, key=lambda o: o.objective)


def kv_options(budget: Budget, cfg: DecoderConfig, target: CpuTarget,
               params: Mapping[str, int], omega: np.ndarray, choices: Sequence[str],
               work: Workload, harms: Mapping[str, float],
               table: Table | None = None,
               shapes: Mapping[str, tuple[int, int]] | None = None) -> tuple[KvOption, ...]:
    """One `KvOption` per KV dtype in `harms` (dtype -> its measured harm)."""
    names, n = list(params), list(params.values())
    dims = None if shapes is None else [shapes[name] for name in names]
    return tuple(kv_option(budget, cfg, target, n, omega, names, choices,
                           replace(work, kv_dtype=kv), h, table, dims)
                 for kv, h in harms.items())


def describe(options: Sequence[KvOption], chosen: str) -> str:
    """One line: each option's objective (omega + harm) or infeasibility, and the choice."""
    parts = [f"{o.kv_dtype}: {o.plan_omega:.4g} + {o.harm:.3g} = {o.objective:.4g}"
             if o.plan_omega is not None else f"{o.kv_dtype}: no plan meets the budget"
             for o in options]
    return f"KV cache {chosen} chosen (objective = plan omega + KV harm; " + "; ".join(
        parts) + ")."
