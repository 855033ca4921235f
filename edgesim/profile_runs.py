"""Which profiled onnxruntime runs show the model as it runs on cores of its own.

On a shared machine a multi-threaded run is distorted in two ways the per-node minimum over
runs does not undo: onnxruntime's pool worker may not be scheduled at all during a run (the
calling thread then does every split op alone, at one-thread speed, and the profile still
looks fast and steady), or a thread of the session waits on the run queue mid-run. Both are
visible per run:

- a run's workers joined it if their `num_run` counters (each node event's
  `thread_scheduling_stats.sub_threads`; a worker joins a run's parallel section once, so the
  counter grows by one per run it takes part in) grew between the previous run and this one;
- the session's threads waited on the run queue if the run-delay field of
  `/proc/self/task/*/schedstat` (Linux, ns) grew during the run.

A run is clean when its workers joined and its threads waited less than WAIT_SHARE of its
duration; at one thread every warm run is (a wait only adds time to the nodes it hits, and the
per-node minimum over runs already drops those). Node times come from the clean runs
(`edgesim.validate.node_times`); a case without one says so (`Validation.clean_runs`).

Clean runs can still be slowed: a process on the other core contends for the shared cache and
DRAM without making this one wait, or the machine's state changes part-way (a neighbour
starts). `assess` reads that from the kept runs themselves (`Noise`): the run-to-run spread
of the nodes that dominate the time, and whether their fastest times in the first half of
the runs agree with those in the second half (the per-node minimum is only as good as that
agreement); with few clean runs at several threads, neither is trusted.
"""

from __future__ import annotations

import bisect
import os
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# a run whose threads waited on the run queue for more than this share of its duration is
# contended (schedstat accounts waits at scheduler ticks, so small waits read as 0 or 1 tick)
WAIT_SHARE = 0.02
FIRST_RUN_COLD = 1  # the first run allocates buffers and prepacks weights: never clean
NODE_SUFFIX = "_kernel_time"  # onnxruntime profile event of one node's kernel
# `assess`: nodes whose fastest run takes at least REF_NODE_MS stand for the case (finer ones
# are read in whole microseconds, and the profiler's own per-node work dominates them)
REF_NODE_MS = 0.05
# assumed limits (no source: a quiet machine repeats onnxruntime's node times within a few
# per cent): the reference nodes' median over their minimum, and the gap between the
# minima of the first and second half of the runs, beyond which a case is called disturbed
SPREAD_LIMIT = 0.15
DRIFT_LIMIT = 0.05
CLEAN_SHARE_MIN = 0.5  # at several threads: fewer clean warm runs than this share is noisy
# assumed: the session's threads waited on the run queue for more than this share of the warm
# runs' time: other programs took turns on these cores, and each turn leaves the caches to
# refill, a slowdown every run shares (so spread and drift miss it)
QUEUE_SHARE_LIMIT = 0.05
MIN_HALF_RUNS = 2  # runs per half below which the drift cannot be read
# onnxruntime's profiler writes durations in whole microseconds: each node's time may read a
# tick apart between runs of the same speed, so spread and drift allow one tick per node
TICK_MS = 0.001


def sched_wait_ns() -> int:
    """Run-queue wait (ns) summed over this process's threads so far; 0 where the kernel
    does not expose schedstat (the check then rests on the workers' counters alone)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return total


def run_windows(events: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) in profile us of every `model_run` event, in run order."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    return [(float(e.get("ts", 0)), float(e.get("ts", 0)) + float(e.get("dur", 0)))
            for e in runs]


def run_of(ts: float, windows: Sequence[tuple[float, float]]) -> int:
    """Index of the run whose window holds `ts` (-1 if none); windows in time order."""
    i = bisect.bisect_right([start for start, _ in windows], ts) - 1
    return i if i >= 0 and ts <= windows[i][1] else -1


def worker_counts(events: Sequence[Mapping[str, Any]],
                  windows: Sequence[tuple[float, float]]) -> list[int]:
    """Sum of the pool workers' `num_run` counters at the end of each run (-1 for a run with
    no thread statistics: one thread, or profiling without them)."""
    counts = [-1] * len(windows)
    for e in events:
        stats = e.get("args", {}).get("thread_scheduling_stats") if e.get("cat") == "Node" else None
        i = run_of(float(e.get("ts", 0)), windows) if stats else -1
        if stats and i >= 0:
            subs = stats.get("sub_threads", {}).values()
            counts[i] = max(counts[i], sum(int(s.get("num_run", 0)) for s in subs))
    return counts


def joined(counts: Sequence[int]) -> list[bool]:
    """Whether the workers took part in each run: their counters grew since the run before
    (a run without statistics counts as joined: nothing to wait for)."""
    out, last = [], 0
    for c in counts:
        out.append(c < 0 or c > last)
        last = max(last, c)
    return out


def clean_mask(events: Sequence[Mapping[str, Any]], waits_ns: Sequence[int]) -> list[bool]:
    """Per profiled run: did it run on cores of its own (see the module docstring)?
    `waits_ns`: the run-queue wait during each run (`sched_wait_ns` differences)."""
    windows = run_windows(events)
    counts = worker_counts(events, windows)
    took = joined(counts)
    out = []
    for i, (start, end) in enumerate(windows):
        wait = waits_ns[i] if i < len(waits_ns) and counts[i] >= 0 else 0
        quiet = wait * 1e-3 <= WAIT_SHARE * (end - start)
        out.append(i >= FIRST_RUN_COLD and took[i] and quiet)
    return out


def event_runs(events: Sequence[Mapping[str, Any]]) -> list[int]:
    """Run index of each event (-1 outside every run), in `events`' order."""
    windows = run_windows(events)
    return [run_of(float(e.get("ts", 0)), windows) for e in events]


def node_samples(events: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(run index, kernel ms) of every node's kernel events, in profile order (run -1:
    outside every `model_run` window)."""
    runs = event_runs(events)
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for e, run in zip(events, runs, strict=True):
        name = str(e.get("name", ""))
        if e.get("cat") == "Node" and name.endswith(NODE_SUFFIX):
            out[name[:-len(NODE_SUFFIX)]].append((run, float(e["dur"]) * 1e-3))
    return out


def parallel_nodes(events: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """Node name -> whether onnxruntime ran a parallel section for it in any run: its kernel
    event's `thread_scheduling_stats.main_thread.block_size` lists the blocks the node's
    parallel loops handed to the pool (empty: it ran on the calling thread alone)."""
    out: dict[str, bool] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith(NODE_SUFFIX):
            continue
        stats = e.get("args", {}).get("thread_scheduling_stats") or {}
        node = name[:-len(NODE_SUFFIX)]
        out[node] = out.get(node, False) or bool(stats.get("main_thread", {}).get("block_size"))
    return out


def kept(samples: Mapping[str, Sequence[tuple[int, float]]],
         keep: Sequence[bool] | None) -> dict[str, list[float]]:
    """Per node, its times (ms) in the runs `keep` marks (all runs when `keep` is None, or
    when none of the node's runs is kept)."""
    out = {}
    for name, runs in samples.items():
        chosen = [ms for run, ms in runs if keep is not None and 0 <= run < len(keep)
                  and keep[run]]
        out[name] = chosen or [ms for _, ms in runs]
    return out


def _reference(samples: Mapping[str, Sequence[float]]) -> list[Sequence[float]]:
    """The nodes that stand for the case: fastest run >= REF_NODE_MS (all when none is)."""
    timed = [v for v in samples.values() if v]
    big = [v for v in timed if min(v) >= REF_NODE_MS]
    return big or timed


def _beyond_ticks(high: float, low: float, nodes: int) -> float:
    """(high - low) / low, less the TICK_MS per node the profiler's rounding may account
    for; 0 when that is all the difference is."""
    return max(0.0, high - low - nodes * TICK_MS) / low if low > 0 else 0.0


def spread(samples: Mapping[str, Sequence[float]]) -> float:
    """Run-to-run spread of a case: the reference nodes' summed medians over their summed
    minima, - 1, beyond a tick per node (0 when every run took the same time)."""
    ref = _reference(samples)
    return _beyond_ticks(sum(statistics.median(v) for v in ref), sum(min(v) for v in ref),
                         len(ref))


def drift(samples: Mapping[str, Sequence[float]]) -> float | None:
    """How far the reference nodes' summed minima over the first half of the runs and over
    the second half disagree: larger / smaller - 1, beyond a tick per node; None with under
    MIN_HALF_RUNS runs in a half. `samples`: per node, its times in run order."""
    halves = [(v[:len(v) // 2], v[len(v) // 2:]) for v in _reference(samples)]
    if not halves or min(len(a) for a, _ in halves) < MIN_HALF_RUNS:
        return None
    first, second = sum(min(a) for a, _ in halves), sum(min(b) for _, b in halves)
    return _beyond_ticks(max(first, second), min(first, second), len(halves))


@dataclass(frozen=True)
class Noise:
    """How disturbed one case's measurements were (`assess`)."""

    spread: float
    drift: float | None
    clean_share: float
    queue_share: float
    reasons: tuple[str, ...]

    @property
    def disturbed(self) -> bool:
        return bool(self.reasons)

    def message(self) -> str:
        """One line for the user ("" when the measurements look undisturbed)."""
        if not self.reasons:
            return ""
        return (f"measurements were noisy ({'; '.join(self.reasons)}): the errors may be "
                "this machine's load, not the model's; rerun on an idle machine")


def queue_share(events: Sequence[Mapping[str, Any]], waits_ns: Sequence[int]) -> float:
    """Run-queue wait of the session's threads over the warm runs (`waits_ns`: per run, as
    `clean_mask` takes them), as a share of the time from the first warm run's start to the
    last run's end (the waits are read around each run, gaps between runs included)."""
    windows = run_windows(events)
    if len(windows) <= FIRST_RUN_COLD:
        return 0.0
    span_us = windows[-1][1] - windows[FIRST_RUN_COLD][0]
    waited_us = sum(waits_ns[FIRST_RUN_COLD:len(windows)]) * 1e-3
    return waited_us / span_us if span_us > 0 else 0.0


def assess(samples: Mapping[str, Sequence[float]], clean: int, warm: int, threads: int,
           queued: float = 0.0) -> Noise:
    """Judge a case's kept runs (`samples`: per node, its times in run order over the runs
    `node_times` used): spread above SPREAD_LIMIT, halves drifting apart by more than
    DRIFT_LIMIT (not judged with under MIN_HALF_RUNS runs a half), a run-queue wait
    (`queued`, from `queue_share`) above QUEUE_SHARE_LIMIT, or at several threads fewer than
    CLEAN_SHARE_MIN of the `warm` runs clean."""
    s, d = spread(samples), drift(samples)
    share = clean / warm if warm > 0 else 0.0
    reasons = []
    if queued > QUEUE_SHARE_LIMIT:
        reasons.append(f"this process waited for a core {queued:.0%} as long as it ran "
                       f"(> {QUEUE_SHARE_LIMIT:.0%}: other programs shared the cores)")
    if s > SPREAD_LIMIT:
        reasons.append(f"run-to-run spread {s:.0%} > {SPREAD_LIMIT:.0%}")
    if d is not None and d > DRIFT_LIMIT:  # None: too few runs to tell (JSON shows null)
        reasons.append(f"fastest times of the first and second half of the runs differ by "
                       f"{d:.0%} > {DRIFT_LIMIT:.0%}")
    if threads > 1 and share < CLEAN_SHARE_MIN:
        reasons.append(f"{clean} of {warm} runs had the cores to themselves")
    return Noise(s, d, share, queued, tuple(reasons))
