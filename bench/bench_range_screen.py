"""The end-to-end range search with and without its screen (`edgesim.ranges.E2E_SCREEN`,
`compiler.range_search._Scorer`). Prints JSON.

Per model, `edgesim quantize --bits 8` (W8A8, calibration on the model's SAMPLES samples as
`bench_compile` prepares them, no time bound on the search) runs once with the screen off
and once on, interleaved over `--rounds`: the onnxruntime runs of the search's trials, the
assignments evaluated, the CPU seconds of `quantize_model` (user + system of this process,
all threads), whether the picks are the same and the emitted files equal (sha256).

    python bench/bench_range_screen.py [--models resnet18,mobilenet_v2,ppocr,magika,silero]
        [--rounds 2] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_compile import prepare  # noqa: E402
from bench_real_models import cache_dir  # noqa: E402


def _flags(args: tuple[str, ...]) -> dict:
    """`load_graph` keywords from `bench_compile`'s CLI flags."""
    kw: dict = {"input_shapes": {}, "input_values": {}, "batch_axes": {}}
    names = {"--input-shape": "input_shapes", "--input-value": "input_values",
             "--batch-axis": "batch_axes"}
    for flag, value in zip(args[::2], args[1::2]):
        k, v = value.split("=", 1)
        kw[names[flag]][k] = ([int(x) for x in v.split("x")] if flag == "--input-shape"
                              else float(v) if flag == "--input-value" else int(v))
    return {k: v or None for k, v in kw.items()}


def search(case, screen: float | None, out: Path) -> dict:
    """One W8A8 quantisation with the search's screen at `screen`; its figures."""
    import compiler.range_search as rc
    import edgesim.quantize as eq
    import edgesim.ranges as er
    from edgesim import calibration as cal
    from edgesim.loading import load_graph

    runs, bounded = [], rc.bounded_error

    def counted(*a, **kw):  # the trials' case runs
        shares = bounded(*a, **kw)
        runs.append(len(shares))
        return shares

    kw = _flags(case.args)
    g = load_graph(str(case.src), kw.pop("input_shapes"), **kw)
    data = cal.read(g, str(case.npz))
    er.E2E_SCREEN, rc.bounded_error = screen, counted
    picks: dict = {}
    choose = rc.choose_bounded

    def recorded(*a, **kw):  # the search's choice per activation width
        stats, refined = choose(*a, **kw)
        picks.update({f"{t}@{a[5] if len(a) > 5 else 8}": m for t, m in refined.chosen.items()})
        return stats, refined
    try:
        rc.choose_bounded = recorded
        cpu = os.times()
        start = cpu.user + cpu.system
        result = eq.quantize_model(g, 8, calib=data, out=out, kernel_check="off")
        cpu = os.times()
        spent = cpu.user + cpu.system - start
    finally:
        rc.bounded_error, rc.choose_bounded = bounded, choose
    sha = hashlib.sha256(Path(result.out).read_bytes()).hexdigest()
    return {"runs": sum(runs), "evaluations": len(runs), "cpu_s": round(spent, 2),
            "sha256": sha[:16], "picks": picks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,mobilenet_v2,ppocr,magika,silero")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--cache", help="folder for downloaded packages")
    args = p.parse_args()
    from edgesim.ranges import E2E_SCREEN

    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models.split(","):
            case = prepare(name, tmp, cache_dir(args.cache))
            got: dict = {"off": [], "on": []}
            for _ in range(args.rounds):
                for label, screen in (("off", None), ("on", E2E_SCREEN)):
                    t0 = time.perf_counter()
                    r = search(case, screen, tmp / f"{name}.{label}.onnx")
                    got[label].append({**r, "seconds": round(time.perf_counter() - t0, 2)})
            off, on = got["off"][-1], got["on"][-1]
            rows.append({"model": name, "screen": E2E_SCREEN,
                         "runs": [off["runs"], on["runs"]],
                         "evaluations": [off["evaluations"], on["evaluations"]],
                         "cpu_s": [[r["cpu_s"] for r in got[k]] for k in ("off", "on")],
                         "same_picks": off["picks"] == on["picks"],
                         "same_file": off["sha256"] == on["sha256"]})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"load_average_before": load, "load_average_after": os.getloadavg(),
                      "models": rows}, indent=1))


if __name__ == "__main__":
    main()
