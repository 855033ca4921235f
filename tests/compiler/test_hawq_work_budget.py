"""HAWQ's default budget clock (Gauss-Newton) charges the work of the passes it ran, so its
cut does not move with the CPU time that work took (SwiftF0 at load 7-9: 1, 3, 6 or 7
iterations from one command on CPU seconds)."""

from __future__ import annotations

import time

import pytest

from compiler import time_budget
from compiler.sensitivity import gauss_newton, hawq
from tests.compiler.hawq_models import two_block_least_squares


def _calls(monkeypatch: pytest.MonkeyPatch, burn_s: float) -> list[int]:
    """Each chunk call's probe count; every call first burns `burn_s` CPU seconds on this
    thread (a loaded machine: caches shared, workers spinning, the same work costs more)."""
    calls: list[int] = []
    real = gauss_newton.chunk_samples

    def loaded(*args, **kwargs):
        end = time.process_time() + burn_s
        while time.process_time() < end:
            pass
        calls.append(args[5])
        return real(*args, **kwargs)
    monkeypatch.setattr(gauss_newton, "chunk_samples", loaded)
    return calls


@pytest.mark.parametrize("burn_s", [0.0, 0.05])
def test_the_default_budget_cuts_at_the_same_chunk_under_load(monkeypatch, burn_s) -> None:
    """8 chunks, 2 probes each in the first pass (MIN_DOF = 8): a chunk is charged one
    forward pass and two backward passes of BACKWARD_SHARE forward passes each, 5 units of
    `pass_seconds`. With 22.5 units the pass, paced from its second chunk, stops before a
    chunk that would not fit: after c chunks 22.5 - 5c units are left for the next 5, so it
    stops after 4 (2.5 left), whether or not each chunk also burnt 50 ms of CPU time (on the
    process's CPU seconds, 22.5 units is microseconds: two chunks either way)."""
    calls = _calls(monkeypatch, burn_s)
    g, feeds, t = two_block_least_squares(batch=4)
    unit = time_budget.pass_seconds(g) * (1 + 2 * time_budget.BACKWARD_SHARE) / 5
    assert time_budget.BACKWARD_SHARE == 2.0  # the 5 units above
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=22.5 * unit)
    assert calls == [2, 2, 2, 2] and sens.cut_short and sens.iterations == 2


def test_the_work_meter_reads_what_was_charged() -> None:
    """A `WorkMeter` budget's remaining time falls by the charges only, not with time."""
    meter = time_budget.WorkMeter()
    budget = time_budget.start(3.0, meter)
    assert budget is not None
    time.sleep(0.01)
    assert budget.remaining() == 3.0
    budget.charge(1.25)
    assert budget.remaining() == 1.75 and budget.fits(0.0, 1) is True
    budget.charge(1.0)
    assert budget.fits(0.0, 1) is False  # 0.75 left, a unit took 2.25 / 1


def test_hessian_keeps_the_cpu_clock() -> None:
    """The weight-space estimator charges nothing to a meter: its budget stays on CPU time."""
    assert hawq._clock(None, "hessian") is time.process_time
    assert isinstance(hawq._clock(None, "gauss-newton"), time_budget.WorkMeter)
