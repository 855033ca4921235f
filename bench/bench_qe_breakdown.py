"""Where the compile's "quantising and emitting" phase spends its CPU time (issue 17). JSON.

Per model (prepared as `bench_compile` prepares it), `edgesim compile` runs in this process
with a CPU clock (`time.process_time`: this process, all threads) read around each step
named in `STEPS` and around each phase; no profiler. cProfile charges every Python call
its own overhead, so call-heavy steps read 10-30x too slow under it (PP-OCR: `Graph.
consumers` 2 ms a call profiled, 0.06 ms timed; `Graph.layer_table` 76 ms and 13 ms),
and its hot spots mislead. Steps nest (the range search holds its sessions and emissions),
so their seconds do not add up to the phase's; they are booked inside the "quantising and
emitting" phase only. `onnxruntime.InferenceSession.__init__` is session creation from
bytes (parsing, graph optimisation, prepacking), `edgesim.evaluate.session` minus it the
serialisation, `onnxruntime.InferenceSession.run` every run.

    python bench/bench_qe_breakdown.py [--models ppocr,resnet18] [--method proxy]
        [--cache DIR]

`--method proxy` (data-free sensitivities) gives the same plan in every run; HAWQ's plan
depends on how much of its wall-clock budget the machine's load leaves it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_compile import prepare  # noqa: E402
from bench_real_models import cache_dir  # noqa: E402

# module -> functions timed; every edgesim / compiler module holding one of them (imported
# by name) gets the timed one, so no caller escapes the clock
STEPS = {
    "compiler.passes.quantize": ("quantize",),
    "compiler.emit": ("emit", "write"),
    "compiler.verify": ("verify",),
    "edgesim.evaluate": ("session",),
    "edgesim.float_pass": ("onnxruntime_env",),
    "compiler.range_choice": ("choose_methods", "candidate_params", "_graph_errors"),
    "compiler.range_search": ("refine_bounded", "bounded_error"),
    "edgesim.alloc_dynamic": ("affordable", "priced_alloc"),
    "edgesim.quantize": ("_extreme_layers", "_kernel_check", "_bias_corrected",
                         "_chosen_ranges", "_held_runs"),  # (before edgesim.ranges)
    "edgesim.ranges": ("chosen_ranges", "_held_runs"),
}
# onnxruntime's own: session creation from bytes (parse, graph optimisation, prepacking;
# `edgesim.evaluate.session` minus this is serialisation) and runs
ORT_STEPS = ("__init__", "run")
PHASE = "quantising and emitting"  # steps are booked inside this phase only


def _timed(f: Callable[..., Any], totals: list[float], inside: list[bool]
           ) -> Callable[..., Any]:
    @functools.wraps(f)
    def run(*a: Any, **kw: Any) -> Any:
        if not inside[0]:
            return f(*a, **kw)
        start = time.process_time()
        try:
            return f(*a, **kw)
        finally:
            totals[0] += time.process_time() - start
            totals[1] += 1
    return run


@contextlib.contextmanager
def timers() -> Iterator[dict[str, list[float]]]:
    """Every `STEPS` function and compile phase timed while inside; totals by name."""
    import onnxruntime as ort

    import edgesim.progress as progress

    totals: dict[str, list[float]] = {}
    inside = [False]
    saved: list[tuple[Any, str, Any]] = []
    for module in STEPS:
        with contextlib.suppress(ModuleNotFoundError):  # an older tree (its own ROOT copy)
            importlib.import_module(module)
    holders = [m for k, m in sys.modules.items() if k.split(".")[0] in ("edgesim", "compiler")]
    for module, names in STEPS.items():
        for name in names:
            f = getattr(sys.modules.get(module), name, None)
            if f is None:
                continue
            timed = _timed(f, totals.setdefault(f"{module}.{name}", [0.0, 0]), inside)
            for m in holders:
                if getattr(m, name, None) is f:
                    saved.append((m, name, f))
                    setattr(m, name, timed)
    for name in ORT_STEPS:
        f = getattr(ort.InferenceSession, name)
        saved.append((ort.InferenceSession, name, f))
        setattr(ort.InferenceSession, name,
                _timed(f, totals.setdefault(f"onnxruntime.InferenceSession.{name}", [0.0, 0]),
                       inside))
    phase = progress.Progress.phase

    @contextlib.contextmanager
    def timed_phase(self: Any, name: str) -> Iterator[None]:
        start = time.process_time()
        inside[0] = name == PHASE
        try:
            with phase(self, name):
                yield
        finally:
            inside[0] = False
        totals[f"phase: {name}"] = [time.process_time() - start, 1]
    saved.append((progress.Progress, "phase", phase))
    progress.Progress.phase = timed_phase  # type: ignore[method-assign]
    try:
        yield totals
    finally:
        for owner, name, f in saved:
            setattr(owner, name, f)


def breakdown(case: Any, method: str, out: Path) -> dict[str, Any]:
    """One compile of `case`: CPU seconds and calls per timed step and phase."""
    from edgesim.cli import main

    argv = ["compile", str(case.src), "--target", "rpi5", "--method", method, "--calib",
            str(case.npz), "--quiet", "--force", *case.args, "-o", str(out)]
    with timers() as totals, contextlib.redirect_stdout(open(os.devnull, "w")):
        main(argv)
    return {k: {"cpu_s": round(v[0], 3), "calls": int(v[1])} for k, v in totals.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="ppocr,resnet18,mobilenet_v2,magika,silero")
    p.add_argument("--method", default="proxy")
    p.add_argument("--cache", help="folder for downloaded packages")
    args = p.parse_args()
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models.split(","):
            case = prepare(name, tmp, cache_dir(args.cache))
            rows.append({"model": name, "steps": breakdown(case, args.method, tmp / name)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"method": args.method, "load_average_before": load,
                      "load_average_after": os.getloadavg(), "models": rows}, indent=1))


if __name__ == "__main__":
    main()
