"""A time budget for the sensitivity analysis and the range search: when it started, how long
it may run, which clock (one home: both bound their work by it, so it lives outside
`compiler.sensitivity`, whose package loads every analysis).

The default clock is the process's CPU time (all its threads), not the wall clock: a budget
of wall seconds on a busy machine cut the analysis after fewer probes than on an idle one, so
the same compile gave different plans with the load (an EfficientWord-Net knee came out 46.6
or 37.3 MB); the CPU seconds the same work takes barely move with the load. The clock is
injectable so that tests can drive it (a counter per call) instead of timing real work.

CPU seconds still moved with the load (SwiftF0, 5 s budget, load 7-9: 1, 3, 6 or 7 HAWQ
iterations in four runs of one command; 5, 6 or 7 at load 4-5). No other thread's time was in
it (the main thread's CPU time equalled the process's): the same work takes more CPU seconds
on a loaded machine (shared caches and cores, a hypervisor's stolen time), and how many more
probes fit (`gauss_newton._fitting`) rounds that noisy pace down. So the Gauss-Newton analysis
is charged on a `WorkMeter` instead: each chunk's forward pass and each probe's backward pass
count their multiply-accumulates and elementwise operations at the fixed rate `WORK_RATE`,
the same seconds whatever the load. Nothing else is charged: not the early tests'
settle-rule solves (`compiler.sensitivity.early_stop`, bounded by what they can still decide),
not the calls' Python overhead. The range search charges its trial runs on a meter of its own
(`edgesim.ranges`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from compiler.graph_table import layer_table
from compiler.ir import Graph

Clock = Callable[[], float]

# MACs + elementwise ops of the analysis's passes per charged second: the pace of its
# Gauss-Newton probing on this project's 2-core x86 host (SwiftF0, 48 chunks, 80 probes:
# forward 0.026 CPU-s for 0.22 G, a probe 0.04 CPU-s for 0.43 G; assumed to hold roughly
# elsewhere: it only converts the budget's unit, CPU seconds, into work).
WORK_RATE = 1.0e10
BACKWARD_SHARE = 2.0  # a backward pass's work relative to its forward (two GEMMs per one)


class WorkMeter:
    """A clock that reads the seconds of work charged to it (`charge`), not time."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds

    def charge(self, seconds: float) -> None:
        """Count `seconds` more of work done."""
        self.seconds += seconds


def pass_seconds(g: Graph) -> float:
    """Charged seconds of one forward pass of `g` at its static shapes (`WORK_RATE`)."""
    t = layer_table(g)
    return float(t.macs.sum() + t.ops.sum()) / WORK_RATE


@dataclass(frozen=True)
class TimeBudget:
    """`seconds` of `clock` from `start` on.

    Attributes:
        seconds: the budget.
        start: the clock's reading when the analysis began.
        clock: seconds since an arbitrary origin (default `time.process_time`: CPU seconds).
    """

    seconds: float
    start: float
    clock: Clock = time.process_time

    def charge(self, seconds: float) -> None:
        """Count `seconds` of work done, on a `WorkMeter` clock (a real clock counts itself)."""
        if isinstance(self.clock, WorkMeter):
            self.clock.charge(seconds)

    def remaining(self) -> float:
        """Seconds left (negative once overrun)."""
        return self.seconds - (self.clock() - self.start)

    def fits(self, began: float, done: int, more: int = 1) -> bool:
        """Whether `more` units of work fit in the time left, at the mean pace of the `done`
        units since the clock read `began` (with none done: whether any time is left).

        A loop that asks this before each unit, rather than whether time is left, never
        starts one it cannot finish: its overrun is the spread of the units' times, not a
        whole unit (a chunk of a large model on a loaded machine takes seconds)."""
        now = self.clock()
        left = self.seconds - (now - self.start)
        if done <= 0:
            return left > 0
        return left >= more * (now - began) / done


def start(seconds: float | None, clock: Clock = time.process_time) -> TimeBudget | None:
    """A budget of `seconds` from now (None: no budget)."""
    return None if seconds is None else TimeBudget(float(seconds), clock(), clock)
