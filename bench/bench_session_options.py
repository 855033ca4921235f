"""CPU cost of creating the compile's onnxruntime sessions under other session options. JSON.

Per model (prepared as `bench_compile` prepares it), one `edgesim compile` runs in this
process with `edgesim.evaluate.session` wrapped to keep every model it is handed (the
serialised bytes, the CPU seconds `SerializeToString` took, and the feeds of every run the
compile made on it). Then each session is made again from those bytes under each option set
and replays its runs, in interleaved rounds (forward, then reversed order). Reported per
option set and caller (`_onnxruntime_runner` = the range search's trials), medians over
rounds of the summed CPU seconds (`time.process_time`: this process, all threads): creation
alone and creation plus the runs (an option that makes loading cheaper may make each run
dearer), and whether every output equals the first option set's bit for bit. The options are
those `edgesim.evaluate.session` sets (full optimisation, no spinning) plus one change each:

- `noprepack`: `session.disable_prepacking` (weights not repacked at load);
- `serial_prepack`: `session.prepack.enable_parallel=0`;
- `loop0`: `session.graph_optimizations_loop_level=0`;
- `no_arena`, `no_mem_pattern`: the CPU arena, the memory-pattern planner off;
- `one_thread`: one intra-op thread (no pool threads made);
- `extended`: `ORT_ENABLE_EXTENDED` (no NCHWc layout pass: changes the float convs' kernels,
  so the outputs may differ from the emitted file's; shown for where the time goes);
- `no_opt`: `ORT_DISABLE_ALL` (the same caveat).

A global thread pool (`onnxruntime.set_global_thread_pool_sizes` with
`use_per_session_threads=False`) is process-wide and forbids per-session thread counts
(`edgesim validate` sets them), so it is not one of the option sets here.

    python bench/bench_session_options.py [--models ppocr] [--method proxy] [--rounds 5]
        [--cache DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_compile import prepare  # noqa: E402
from bench_real_models import cache_dir  # noqa: E402

CONFIG = {"base": {}, "noprepack": {"session.disable_prepacking": "1"},
          "serial_prepack": {"session.prepack.enable_parallel": "0"},
          "loop0": {"session.graph_optimizations_loop_level": "0"},
          "no_arena": {"session.enable_cpu_mem_arena": "0"},
          "no_mem_pattern": {"session.enable_mem_pattern": "0"},
          "one_thread": {}, "extended": {}, "no_opt": {}}


class _Recorded:
    """A session that keeps the feeds of each successful run in `feeds`."""

    def __init__(self, sess: Any, feeds: list[dict[str, Any]]) -> None:
        self.sess, self.feeds = sess, feeds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sess, name)

    def run(self, names: Any, feeds: Any, *rest: Any) -> Any:
        out = self.sess.run(names, feeds, *rest)
        self.feeds.append(dict(feeds))  # only runs that succeed (a chunk probe may not)
        return out


def captured(case: Any, method: str, out: Path) -> list[dict[str, Any]]:
    """The models one compile of `case` hands `edgesim.evaluate.session`, in order, each
    with the feeds of its runs."""
    import edgesim.evaluate as ev
    from edgesim.cli import main

    original, seen = ev.session, []

    def keep(model: Any, threads: int | None = None, spin: bool = True) -> Any:
        start = time.process_time()
        data = Path(model).read_bytes() if isinstance(model, str | os.PathLike) \
            else model.SerializeToString()
        seen.append({"bytes": data, "caller": sys._getframe(1).f_code.co_name,
                     "serialise_cpu_s": time.process_time() - start, "feeds": []})
        return _Recorded(original(model, threads, spin), seen[-1]["feeds"])
    argv = ["compile", str(case.src), "--target", "rpi5", "--method", method, "--calib",
            str(case.npz), "--quiet", "--force", *case.args, "-o", str(out)]
    ev.session = keep  # the callers import it from the module when they run
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            main(argv)
    finally:
        ev.session = original
    return seen


def replay(model: dict[str, Any], variant: str) -> tuple[float, float, list[str]]:
    """CPU seconds to create one session of `model` under `variant`, and to create it and
    replay its runs; a digest of each output (all of them held: GiBs on PP-OCR)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    level = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
             "no_opt": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    opts.graph_optimization_level = level.get(variant, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    opts.log_severity_level = 4
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in CONFIG[variant].items():
        opts.add_session_config_entry(key, value)
    if variant == "one_thread":
        opts.intra_op_num_threads = 1
    start = time.process_time()
    sess = ort.InferenceSession(model["bytes"], opts, providers=["CPUExecutionProvider"])
    made = time.process_time() - start
    names = [o.name for o in sess.get_outputs()]
    outputs = [sess.run(names, feeds) for feeds in model["feeds"]]
    total = time.process_time() - start
    return made, total, [hashlib.sha1(y.tobytes()).hexdigest() for got in outputs for y in got]


def timed(models: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Per option set and caller: median summed CPU seconds over interleaved rounds of
    creation and of creation plus runs, and whether the outputs equal the first set's."""
    import numpy as np

    names = list(CONFIG)
    spent = {v: {m["caller"]: np.zeros((rounds, 2)) for m in models} for v in names}
    equal = {v: True for v in names}
    first: dict[int, list[str]] = {}
    for r in range(rounds):
        for variant in names if r % 2 == 0 else names[::-1]:
            for i, m in enumerate(models):
                made, total, outputs = replay(m, variant)
                spent[variant][m["caller"]][r] += (made, total)
                ref = first.setdefault(i, outputs)
                equal[variant] &= outputs == ref
    return {v: {"outputs_equal_base": equal[v],
                **{c: {"create_cpu_s": round(float(np.median(t[:, 0])), 3),
                       "create_and_runs_cpu_s": round(float(np.median(t[:, 1])), 3)}
                   for c, t in by.items()}} for v, by in spent.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="ppocr")
    p.add_argument("--method", default="proxy")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cache", help="folder for downloaded packages")
    args = p.parse_args()
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            models = captured(prepare(name, Path(d), cache_dir(args.cache)), args.method,
                              Path(d) / name)
            callers = [m["caller"] for m in models]
            rows.append({"model": name, "sessions": {c: callers.count(c) for c in callers},
                         "serialise_cpu_s": round(sum(m["serialise_cpu_s"] for m in models), 3),
                         "runs": {c: sum(len(m["feeds"]) for m in models if m["caller"] == c)
                                  for c in callers},
                         "options": timed(models, args.rounds)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"method": args.method, "rounds": args.rounds, "load_average_before": load,
                      "load_average_after": os.getloadavg(), "models": rows}, indent=1))


if __name__ == "__main__":
    main()
