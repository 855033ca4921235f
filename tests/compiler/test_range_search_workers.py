"""The range search's trials run several held-out cases at once (`bounded_error(workers=)`,
`edgesim.ranges.trial_workers`): the shares and the stop are those of running the cases one
by one (oracle: the prefix sums of known case errors), the cases really run together, and
the quantised file is the one the one-case-at-a-time search writes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.range_search import bounded_error
from edgesim import calibration as cal
from edgesim.loading import load_graph


def _table_runner(offsets: list[int], runs: list[int]):  # type: ignore[no-untyped-def]
    """A runner whose output on case i is 1 + offsets[i] against a reference of ones: case
    i's squared error is offsets[i] ** 2 (exact in floats). `runs` counts the computes."""
    def runner(_qg):  # type: ignore[no-untyped-def]
        def compute(feeds):  # type: ignore[no-untyped-def]
            runs.append(feeds["i"])
            return {"y": np.array([1.0 + offsets[feeds["i"]]])}
        return compute
    return runner


@settings(max_examples=80, deadline=None)
@given(offsets=st.lists(st.integers(0, 5), min_size=1, max_size=9),
       bound=st.integers(0, 60), workers=st.integers(1, 4), screened=st.booleans())
def test_shares_and_stop_are_those_of_one_case_at_a_time(offsets: list[int], bound: int,
                                                         workers: int, screened: bool
                                                         ) -> None:
    limits = [np.inf] + [bound / 2] * (len(offsets) - 1) if screened else None
    # the oracle: cases in order until the running sum reaches the bound or the limit
    want, running = [], 0
    for k, d in enumerate(offsets):
        want.append(float(d * d))
        running += d * d
        if running >= bound or limits is not None and running >= limits[k]:
            break
    runs: list[int] = []
    cases = tuple(({"i": i}, {"y": np.ones(1)}) for i in range(len(offsets)))
    got = bounded_error(None, cases, _table_runner(offsets, runs), {"y": 1.0}, bound, limits,
                        workers=workers)  # type: ignore[arg-type]
    assert got == want
    # every started wave finishes, no later one starts
    assert len(want) <= len(runs) <= min(len(offsets), -(-len(want) // workers) * workers)


def test_two_workers_run_two_cases_together() -> None:
    """Each compute waits until another is running (a barrier of two): one case at a time
    would break it."""
    together = threading.Barrier(2, timeout=60)

    def runner(_qg):  # type: ignore[no-untyped-def]
        def compute(feeds):  # type: ignore[no-untyped-def]
            together.wait()
            return {"y": np.array([2.0])}
        return compute
    cases = tuple(({"i": i}, {"y": np.ones(1)}) for i in range(4))
    got = bounded_error(None, cases, runner, {"y": 4.0}, workers=2)  # type: ignore[arg-type]
    assert got == [0.25] * 4


@pytest.mark.ort
def test_the_file_is_the_one_case_at_a_time_search_writes(tmp_path, monkeypatch) -> None:
    import edgesim.ranges as ranges
    from edgesim.quantize import quantize_model

    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 32, seed=11)
    files = []
    for name, split in (("one", (1, None)), ("two", (2, 1))):
        monkeypatch.setattr(ranges, "trial_workers", lambda split=split: split)
        out = tmp_path / f"{name}.onnx"
        quantize_model(g, 8, calib=data, out=out, kernel_check="off")
        files.append(out.read_bytes())
    assert files[0] == files[1]
