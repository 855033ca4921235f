"""The Gauss-Newton analysis's stopping tests: which errors still count against `tol` once a
`settled` rule has spoken (`open_rse`), and the early tests of a first pass
(`gauss_newton.traces`, `early=True`).

A first pass of one probe per chunk need not cover every chunk: at a few chunk counts
(`early_checks`) the chunks so far, as a sample of all (`sampled_estimate`, which counts the
chunk-to-chunk variation as error too), are tested against `tol` and the `settled` rule; once
they pass, the remaining chunks run forward only, for `observe` (the backward pass, 2-4x a
forward in onnxruntime, was most of the analysis). On zoo mobilenet_v2 with 32 samples it
stops after 9 of them (max relative standard error 0.05), on resnet18 after 9 too (settled).

The tests are few (at most four), and bounded by what they can still decide, not by time: a
test is skipped once the last left more than `MOST_OPEN` of the weights open, and none
follows one whose open weights would not close even at the pass's end (`_closes_by_end`;
PP-OCR's p2o.Conv.6 settles only at about 9 probes per sample). They used to be skipped too
once they took over a quarter of the pass's time, but the budget is charged work
(`time_budget.WorkMeter`), which the tests do not add to, so that rule could no longer fire:
a rule on their time would put the load back into the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from compiler.sensitivity.trace_estimate import MIN_DOF, TraceEstimate, sampled_estimate

# most of the weights the last early test may have left open for the next one to run (a few
# more chunks shrink the errors by sqrt(4/3) or so: they will not close that many)
MOST_OPEN = 0.25
# (estimate, bool per weight: still above tol) -> bool per weight: its uncertainty cannot matter
Settled = Callable[[TraceEstimate, np.ndarray], np.ndarray]


def open_rse(est: TraceEstimate, tol: float, settled: Settled | None) -> np.ndarray:
    """The relative standard errors that still count against `tol`: 0 for the weights that
    `settled` (asked only about those at or above `tol`) calls settled."""
    need = est.rse >= tol
    if settled is None or not need.any():
        return est.rse
    return np.where(need & ~settled(est, need), est.rse, 0.0)


def early_checks(chunks: int) -> frozenset[int]:
    """The chunk counts at which a first pass of one probe per chunk tests whether the chunks
    so far already meet the precision goal: 1/4, 3/8, 1/2 and 3/4 of them, and never before
    `MIN_DOF` degrees of freedom (few tests: each may ask the `settled` rule, an allocation
    solve per open weight)."""
    counts = (max(MIN_DOF + 1, -(-chunks * k // 8)) for k in (2, 3, 4, 6))
    return frozenset(c for c in counts if c < chunks)


def early_estimate(names: Sequence[str], parts: Sequence[np.ndarray], total: int, tol: float,
                   settled: Settled | None, left: list[float]) -> TraceEstimate | None:
    """The first pass's estimate from its first `len(parts)` chunks if it meets `tol` (with
    `settled`), else None. `left` = [weights the last test left open; inf: no more tests],
    updated here. A test is skipped once the last left more than one and more than
    `MOST_OPEN` of the weights open (a settle rule solves the allocation twice per open
    weight, seconds on a large model (PP-OCR), which a pass far from `tol` gains nothing
    from), and no test follows one whose open weights would not close even with every
    chunk (`_closes_by_end`)."""
    if left[0] > _most_open(len(names)):
        return None
    est = sampled_estimate(names, parts, total)
    still = ~(open_rse(est, tol, settled) < tol)
    left[0] = float(np.count_nonzero(still))
    if 0 < left[0] <= _most_open(len(names)) and not _closes_by_end(
            est, still, len(parts), total, tol, settled):
        left[0] = np.inf
    return None if still.any() else est


def _most_open(weights: int) -> float:
    """The most weights an early test may leave open for the next one to run."""
    return max(1.0, MOST_OPEN * weights)


def _closes_by_end(est: TraceEstimate, still: np.ndarray, covered: int, total: int,
                   tol: float, settled: Settled | None) -> bool:
    """Whether the weights `still` open after `covered` of `total` chunks could meet `tol` or
    settle by the end of the first pass: their errors shrunk as 1/sqrt(chunks) (a sampled
    estimate's standard error is total / sqrt(c) times the chunks' spread, and the complete
    pass's is that at c = total), with the 10 % margin of `gauss_newton._next_probes` towards
    closing. A test at fewer chunks has larger errors, so if they would not close there, no
    early test of this pass can pass (PP-OCR: one weight, never settled within a pass, kept
    three more tests of all 47 running, 94 allocation solves each)."""
    shrunk = replace(est, rse=est.rse * np.sqrt(covered / (1.1 * total)))
    ok = ~still | (shrunk.rse < tol)
    if settled is not None and not ok.all():
        ok |= settled(shrunk, ~ok)
    return bool(ok.all())
