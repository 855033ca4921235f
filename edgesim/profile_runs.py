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
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping, Sequence
from typing import Any

# a run whose threads waited on the run queue for more than this share of its duration is
# contended (schedstat accounts waits at scheduler ticks, so small waits read as 0 or 1 tick)
WAIT_SHARE = 0.02
FIRST_RUN_COLD = 1  # the first run allocates buffers and prepacks weights: never clean


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
    return [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in runs]


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
