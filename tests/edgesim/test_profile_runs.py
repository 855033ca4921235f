"""`edgesim.profile_runs`: which profiled runs are clean, and node times over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgesim import profile_runs as PR
from edgesim import validate as V


def _run(ts: float, dur: float) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def _node(name: str, ts: float, dur: float, workers: dict[str, int] | None = None) -> dict:
    e = {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {}}
    if workers is not None:
        e["args"]["thread_scheduling_stats"] = {
            "main_thread": {"core": 0},
            "sub_threads": {t: {"num_run": n, "core": 1} for t, n in workers.items()}}
    return e


def _three_runs(counts: tuple[int, int, int]) -> list[dict]:
    """Three runs of nodes a, b; the worker's cumulative counter at each run's end."""
    events = []
    for i, (c, da) in enumerate(zip(counts, (900, 300, 600), strict=True)):
        start = 1000.0 * i
        events += [_run(start, 990), _node("a", start + 10, da, {"w": c}),
                   _node("b", start + 950, 20 + i, {"w": c})]
    return events


def test_runs_are_found_by_their_window():
    windows = [(0.0, 10.0), (20.0, 30.0)]
    assert [PR.run_of(t, windows) for t in (-1, 0, 10, 15, 25, 31)] == [-1, 0, 0, -1, 1, -1]


def test_a_run_counts_as_joined_only_when_the_worker_counter_grew():
    # cumulative counters 2, 2, 3: the worker took part in runs 0 and 2, not in run 1
    assert PR.joined([2, 2, 3]) == [True, False, True]
    # no statistics (one thread): nothing to wait for
    assert PR.joined([-1, -1]) == [True, True]


def test_clean_runs_skip_the_cold_run_the_unjoined_run_and_waits():
    events = _three_runs((1, 1, 2))
    assert PR.worker_counts(events, PR.run_windows(events)) == [1, 1, 2]
    assert PR.clean_mask(events, [0, 0, 0]) == [False, False, True]
    # run 2 waited 30 us on the run queue: 3 % of its 990 us, above WAIT_SHARE
    assert PR.WAIT_SHARE < 0.03
    assert PR.clean_mask(events, [0, 0, 30_000]) == [False, False, False]
    # a wait under WAIT_SHARE of the run keeps it
    assert PR.clean_mask(events, [0, 0, 10_000]) == [False, False, True]


def test_one_thread_runs_are_clean_whatever_they_waited():
    # no thread statistics (one thread): waits do not disqualify a warm run
    events = []
    for i in range(3):
        events += [_run(1000.0 * i, 990), _node("a", 1000.0 * i + 10, 500)]
    assert PR.clean_mask(events, [10**9] * 3) == [False, True, True]


def test_node_times_use_the_kept_runs_and_fall_back_to_all():
    events = _three_runs((1, 1, 2))
    # kept: run 2 only (a = 600 us, b = 22 us), though run 1 was faster for a (300 us)
    got = V.node_times(events, "min", [False, False, True])
    assert got == {"a": pytest.approx(0.600), "b": pytest.approx(0.022)}
    # nothing kept: every run counts (min a = 300 us)
    assert V.node_times(events, "min", [False, False, False])["a"] == pytest.approx(0.300)
    assert V.node_times(events, "min")["a"] == pytest.approx(0.300)


def test_sched_wait_is_a_non_decreasing_count():
    a = PR.sched_wait_ns()
    b = PR.sched_wait_ns()
    assert 0 <= a <= b


def _matmul_model(path: Path) -> None:
    w = helper.make_tensor("w", TensorProto.FLOAT, [256, 256],
                           np.ones(256 * 256, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
         helper.make_node("Relu", ["y"], ["z"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [64, 256])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_onnxruntime_profiles_carry_what_the_check_reads(tmp_path):
    # oracle: onnxruntime's own profile at 2 threads holds one model_run per run, every
    # node event inside one, and per-node worker counters that never decrease over time
    _matmul_model(tmp_path / "m.onnx")
    sess = V.profiled_session(tmp_path / "m.onnx", 2, tmp_path)
    feeds = {"x": np.ones((64, 256), np.float32)}
    waits = [V.waited_run(sess, feeds) for _ in range(4)]
    events = json.loads(Path(sess.end_profiling()).read_text())
    windows = PR.run_windows(events)
    assert len(windows) == 4 and all(w >= 0 for w in waits)
    nodes = [e for e in events if e.get("cat") == "Node"
             and e["name"].endswith(V.NODE_SUFFIX)]
    assert len(nodes) == 8
    assert sorted(PR.run_of(float(e["ts"]), windows) for e in nodes) == [0, 0, 1, 1, 2, 2, 3, 3]
    counts = PR.worker_counts(events, windows)
    assert all(c >= 0 for c in counts) and counts == sorted(counts)
    mask = PR.clean_mask(events, waits)
    assert mask[0] is False and len(mask) == 4


def test_spread_is_median_over_minimum_of_the_nodes_that_dominate():
    # b's fastest run (10 us) is under REF_NODE_MS: a alone stands for the case,
    # median 1.1 ms over minimum 1.0 ms
    assert PR.REF_NODE_MS > 0.010
    # minus a profiler tick (1 us) for the one node
    samples = {"a": [1.0, 1.2, 1.1], "b": [0.010, 0.030, 0.030]}
    assert PR.TICK_MS == 0.001
    assert PR.spread(samples) == pytest.approx((1.1 - 1.0 - 0.001) / 1.0)
    # no node that large: all of them count, time-weighted, a tick each
    small = {"a": [0.010, 0.012, 0.011], "b": [0.010, 0.030, 0.030]}
    assert PR.spread(small) == pytest.approx((0.011 + 0.030 - 0.020 - 0.002) / 0.020)
    assert PR.spread({"a": [2.0, 2.0, 2.0]}) == 0.0
    # a tiny node reading 2 us or 3 us is the profiler's rounding, not noise
    assert PR.spread({"a": [0.002, 0.003, 0.003]}) == 0.0


def test_drift_compares_the_minima_of_the_two_halves_of_the_runs():
    # a neighbour starts half-way: a's fastest run goes from 1.0 to 1.3 ms (less 1 us)
    assert PR.drift({"a": [1.0, 1.05, 1.3, 1.35]}) == pytest.approx(0.299)
    # the same move either way round reads the same
    assert PR.drift({"a": [1.3, 1.35, 1.0, 1.05]}) == pytest.approx(0.299)
    assert PR.drift({"a": [0.010, 0.010, 0.011, 0.011]}) == 0.0  # a tick apart
    # summed over the reference nodes: 1 + 2 in the first half, 2 + 1 in the second
    assert PR.drift({"a": [1.0, 1.0, 2.0, 2.0], "c": [2.0, 2.0, 1.0, 1.0]}) == 0.0
    # three runs: a half of one run says nothing
    assert PR.MIN_HALF_RUNS == 2 and PR.drift({"a": [1.0, 1.0, 1.0]}) is None


def test_queue_share_is_the_warm_runs_wait_over_their_span():
    events = [_run(1000.0 * i, 990) for i in range(3)]
    # warm runs 1 and 2 span 1000 .. 1990 + 1000 us; the cold run's wait does not count
    waits = [10**9, 99_500, 0]
    assert PR.queue_share(events, waits) == pytest.approx(99.5 / 1990)
    assert PR.queue_share(events[:1], [10**9]) == 0.0


def test_assess_names_each_sign_of_a_disturbed_measurement():
    quiet = {"a": [1.0, 1.01, 1.02, 1.0], "b": [0.5, 0.5, 0.51, 0.5]}
    ok = PR.assess(quiet, clean=4, warm=4, threads=2, queued=0.0)
    assert not ok.disturbed and ok.message() == "" and ok.clean_share == 1.0
    assert ok.drift == 0.0 and ok.spread == pytest.approx((1.005 + 0.5 - 1.5 - 0.002) / 1.5)
    # every sign at once: spread, halves apart, waits for a core, few clean runs at 2 threads
    loud = {"a": [1.0, 1.5, 1.5, 1.5, 1.3, 1.5]}  # halves' minima 1.0 and 1.3
    bad = PR.assess(loud, clean=1, warm=6, threads=2, queued=0.2)
    assert bad.disturbed and len(bad.reasons) == 4
    assert bad.spread == pytest.approx(0.499) and bad.drift == pytest.approx(0.299)
    text = bad.message()
    assert text.startswith("measurements were noisy (") and "rerun" in text
    assert "\n" not in text and "1 of 6 runs" in text and "20%" in text
    # at one thread a run is clean whatever it waited: the clean share is not judged there
    assert PR.assess(quiet, clean=0, warm=4, threads=1).reasons == ()
    # limits are strict: exactly at a limit is not noisy
    at = PR.assess(quiet, clean=2, warm=4, threads=2, queued=PR.QUEUE_SHARE_LIMIT)
    assert PR.CLEAN_SHARE_MIN == 0.5 and at.reasons == ()


def test_kept_samples_follow_the_clean_mask_and_fall_back_to_all():
    samples = PR.node_samples(_three_runs((1, 1, 2)))
    assert samples["a"] == [(0, 0.9), (1, 0.3), (2, 0.6)]
    assert PR.kept(samples, [False, True, True])["a"] == [0.3, 0.6]
    assert PR.kept(samples, [False, False, False])["a"] == [0.9, 0.3, 0.6]
    assert PR.kept(samples, None)["b"] == [0.020, 0.021, 0.022]


def test_parallel_nodes_reads_the_blocks_each_node_handed_to_the_pool():
    def node(name: str, blocks: list[int] | None) -> dict:
        args = {} if blocks is None else {"thread_scheduling_stats": {
            "main_thread": {"block_size": blocks}, "sub_threads": {}}}
        return {"cat": "Node", "name": f"{name}{PR.NODE_SUFFIX}", "args": args}

    events = [node("conv", [1]), node("dq", []), node("gemm", []), node("gemm", [32, 32]),
              node("relu", None), {"cat": "Node", "name": "conv_fence_before", "args": {}},
              {"cat": "Session", "name": "model_run"}]
    # a parallel section in any run counts; no statistics (one thread) reads as none
    assert PR.parallel_nodes(events) == {"conv": True, "dq": False, "gemm": True,
                                         "relu": False}
