"""A wall-clock budget for an analysis: when it started, how long it may run, which clock.

The clock is injectable so that tests can drive it (a counter per call) instead of timing
real work.
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
        clock: seconds since an arbitrary origin (default `time.monotonic`).
    """

    seconds: float
    start: float
    clock: Clock = time.monotonic

    def expired(self) -> bool:
        """True once the budget is used up."""
        return self.remaining() <= 0

    def remaining(self) -> float:
        """Seconds left (negative once overrun)."""
        return self.seconds - (self.clock() - self.start)


def start(seconds: float | None, clock: Clock = time.monotonic) -> TimeBudget | None:
    """A budget of `seconds` from now (None: no budget)."""
    return None if seconds is None else TimeBudget(float(seconds), clock(), clock)
