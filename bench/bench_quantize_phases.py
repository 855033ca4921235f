"""Peak RSS per phase of `edgesim quantize` in this process (issue 17). Prints JSON.

Each step of `edgesim.quantize.quantize_model` (load, quantize, verify, emit, kernel check,
write) is wrapped; before and after each, the kernel's high-water mark (VmHWM) is read from
/proc/self/status and reset by writing 5 to /proc/self/clear_refs (Linux >= 4.0), so every
phase reports its own peak, exactly, without sampling. `rss_after_mib` is what the phase
leaves resident (freed memory glibc keeps counts there until it is reused).

    PYTHONPATH=TREE python bench/bench_quantize_phases.py MODEL.onnx [--bits 4]
        [--kernel-check off]

The tree measured is the one on PYTHONPATH (so an older checkout can be measured alike).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PHASES = {"edgesim.loading": ("load_graph",),
          "edgesim.quantize": ("quantize", "verify", "spent_weights", "emit", "_kernel_check",
                               "write")}


def _status_mib() -> dict[str, int]:
    with open("/proc/self/status") as f:
        rows = [line.split() for line in f if line.startswith(("VmRSS", "VmHWM"))]
    return {r[0].rstrip(":"): int(r[1]) // 1024 for r in rows}


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _wrapped(f: Callable[..., Any], name: str, log: list[dict[str, Any]]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        _reset_peak()
        start = time.perf_counter()
        out = f(*args, **kwargs)
        s = _status_mib()
        log.append({"phase": name, "peak_mib": s["VmHWM"], "rss_after_mib": s["VmRSS"],
                    "seconds": round(time.perf_counter() - start, 2)})
        return out
    return run


def main() -> None:
    import importlib

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--bits", default="4")
    p.add_argument("--kernel-check", default="off")
    args = p.parse_args()
    from edgesim.quantize import quantize_model

    s = _status_mib()
    log: list[dict[str, Any]] = [{"phase": "imports", "peak_mib": s["VmHWM"],
                                  "rss_after_mib": s["VmRSS"]}]
    for module, names in PHASES.items():
        mod = importlib.import_module(module)
        for name in (n for n in names if hasattr(mod, n)):  # an older tree may lack one
            setattr(mod, name, _wrapped(getattr(mod, name), name, log))
    bits = int(args.bits) if args.bits.isdigit() else args.bits
    with tempfile.TemporaryDirectory() as d:
        quantize_model(args.model, bits, out=Path(d) / "q.onnx", kernel_check=args.kernel_check)
    top = max(log, key=lambda r: r["peak_mib"])
    print(json.dumps({"model": args.model, "bits": args.bits, "phases": log,
                      "peak_mib": top["peak_mib"], "peak_phase": top["phase"]}, indent=1))


if __name__ == "__main__":
    main()
