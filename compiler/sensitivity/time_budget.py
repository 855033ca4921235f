"""A time budget for an analysis: when it started, how long it may run, which clock.

The default clock is the process's CPU time (all its threads), not the wall clock: a budget
of wall seconds on a busy machine cut the analysis after fewer probes than on an idle one, so
the same compile gave different plans with the load (an EfficientWord-Net knee came out 46.6
or 37.3 MB); the CPU seconds the same work takes barely move with the load. The clock is
injectable so that tests can drive it (a counter per call) instead of timing real work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


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
