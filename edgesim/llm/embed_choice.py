"""The token embedding table's format as a plan choice (com.microsoft::GatherBlockQuantized).

The table is one more knapsack item beside the linears:

- untied: its own row, in float (a Gather) or any MatMulNBits format (GatherBlockQuantized
  reads them all, `edgesim.zoo.decoder`). Its harm is measured in onnxruntime as the KV
  dtype's is (`harm.logit_harm`: 2 x the mean squared logit error of the float model with
  only the table in that format -- the scale of HAWQ's omega; under LRP added as is). Its cost
  is exact: the emitted table bytes (`WeightFormat.stored_bytes`) for `size` and `ram`, its
  weights x bits for `bits` (the budget's average then runs over the table too), and one row
  per token over the read bandwidth for `tok_s` (prompt-length rows for `ttft`). The uniform
  decode figures the linears are priced from already read one row at the linears' format, so
  tok_s counts at most one row (hidden x 4 bytes) twice.
- tied: the head's format decides the table (one packed table, no extra bytes), so the head's
  row pays the table's measured harm on top of its own omega.

The two harms share a scale: on the tiny LM, HAWQ's omega and the same measured harm of one
linear alone agree within ~10% for the block linears (layers.0 down_proj q4: 41.8 vs 42.9,
layers.2 q_proj q2z: 85.6 vs 78.1) and the head measures twice its omega (q4: 93.6 vs 190).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgesim.budget import Budget
from edgesim.llm.budgets import Knapsack, Workload
from edgesim.llm.config import DecoderConfig
from edgesim.llm.formats import EMBED, parse_format
from edgesim.llm.harm import logit_harm
from edgesim.llm.phases import read_bandwidth
from hwmodels.cpu import CpuTarget

HEAD = "lm_head"         # the head a tied table is shared with


@dataclass(frozen=True)
class Table:
    """The embedding table as a plan item: its shape, whether the head shares it, and the
    measured harm of each format (`table_harms`; "fp32" 0)."""

    vocab: int
    hidden: int
    tied: bool
    harm: Mapping[str, float]

    def stored_bytes(self, fmt: str) -> float:
        """Bytes of the table as emitted in `fmt`."""
        return parse_format(fmt).stored_bytes(self.hidden, self.vocab)


@dataclass(frozen=True)
class Problem:
    """A knapsack over the linears and, when untied, the table: harms [L, B], costs [L, B],
    the limit, which (layer, format) pairs are allowed, and the row names and formats."""

    sens: np.ndarray
    cost: np.ndarray
    limit: float
    allowed: np.ndarray | None
    names: tuple[str, ...]
    choices: tuple[str, ...]


def table_harms(build: Callable[[str], bytes], calib: np.ndarray,
                formats: Sequence[str]) -> dict[str, float]:
    """Measured harm of the table in each of `formats`; `build(fmt)` is the float model with
    only the embedding table in `fmt` ("fp32": the float model)."""
    ref = build("fp32")
    return {f: 0.0 if f == "fp32" else logit_harm(ref, build(f), calib) for f in formats}


def table_cost(table: Table, budget: Budget, target: CpuTarget, work: Workload,
               formats: Sequence[str]) -> np.ndarray:
    """The table's cost in each format in the budget's unit (module docstring), [B]."""
    if budget.metric in ("size", "ram"):
        return np.array([table.stored_bytes(f) for f in formats])
    if budget.metric == "bits":
        return np.array([table.vocab * table.hidden * parse_format(f).bits for f in formats],
                        np.float64)
    row = np.array([parse_format(f).stored_bytes(table.hidden, 1) for f in formats])
    rows = 1 if budget.metric == "tok_s" else work.prompt_len
    return rows * row / float(read_bandwidth(target, np.array([work.threads]))[0])


def limit_shift(table: Table, budget: Budget, cfg: DecoderConfig, first: str) -> float:
    """What the table's own row moves out of the linears' fixed part: the `ram` reference
    footprint held it at the first format's bytes per weight; `bits` averages over it."""
    if budget.metric == "ram":
        return cfg.embedding_params() * parse_format(first).bytes_per_weight()
    if budget.metric == "bits":
        return budget.value * table.vocab * table.hidden
    return 0.0


def with_table(k: Knapsack, omega: np.ndarray, names: Sequence[str], choices: Sequence[str],
               table: Table | None, budget: Budget, cfg: DecoderConfig, target: CpuTarget,
               work: Workload) -> Problem:
    """The linears' knapsack with the table as a choice (module docstring)."""
    names, choices = tuple(names), tuple(choices)
    if table is None:
        return Problem(omega, k.cost, k.limit, None, names, choices)
    if table.tied:
        extra = np.zeros_like(omega)
        extra[names.index(HEAD)] = [table.harm[c] for c in choices]
        return Problem(omega + extra, k.cost, k.limit, None, names, choices)
    wide = ("fp32", *choices)
    pad = np.zeros((len(names), 1))
    sens = np.vstack([np.hstack([pad, omega]), [[table.harm[c] for c in wide]]])
    cost = np.vstack([np.hstack([pad, k.cost]), table_cost(table, budget, target, work, wide)])
    allowed = np.ones(sens.shape, bool)
    allowed[:-1, 0] = False   # linears stay MatMulNBits; only the table may stay float
    limit = k.limit + limit_shift(table, budget, cfg, choices[0])
    return Problem(sens, cost, limit, allowed, (*names, EMBED), wide)


def describe_table(table: Table | None, plan: Mapping[str, str]) -> str:
    """One line: the table's chosen format and what each format's harm was."""
    if table is None:
        return "Embedding table: as the source stores it (not a plan choice for this source)."
    harms = ", ".join(f"{f} {h:.3g}" for f, h in table.harm.items())
    if table.tied:
        return (f"Embedding table: shared with lm_head in {plan[HEAD]} (one packed table); "
                f"measured harm per format: {harms}.")
    return f"Embedding table: {plan[EMBED]}; measured harm per format: {harms}."
