"""Wall time and peak memory of `edgesim compile` against onnxruntime's `quantize_static`.

Both run in fresh processes (peak RSS from wait4) on the same zoo model with the same 32
random calibration samples, in the same run. Goal: a full HAWQ compile within 3x of
onnxruntime's static int8 quantisation time, peak memory within 2x. An untimed compile of the
shipped example first fills numba's on-disk kernel cache. Prints JSON.

    python bench/bench_compile.py [--models mobilenet_v2,resnet50,minilm] [--method hawq]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = 32

ORT_SCRIPT = r"""
import sys, numpy as np, onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = onnx.load(src)
rng = np.random.default_rng(0)
def sample(vi):
    dims = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
    if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
        return rng.standard_normal(dims).astype(np.float32)
    if "mask" in vi.name:
        return np.ones(dims, np.int64)
    return rng.integers(0, 1000, dims).astype(np.int64)
feeds = [{vi.name: sample(vi) for vi in model.graph.input} for _ in range(n)]
class Reader(CalibrationDataReader):
    def __init__(self): self.it = iter(feeds)
    def get_next(self): return next(self.it, None)
quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ)
"""


def measured(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (MiB) of one command in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()[-400:] if proc.stderr else ""
    return {"seconds": round(wall, 2), "peak_mib": round(usage.ru_maxrss / 1024, 1),
            "ok": os.waitstatus_to_exitcode(status) == 0, **({"stderr": err} if status else {})}


def bench(name: str, method: str, target: str, tmp: Path) -> dict:
    import onnx

    from edgesim import zoo

    src = tmp / f"{name}.onnx"
    onnx.save(zoo.build(name), src)
    ort = measured([sys.executable, "-c", ORT_SCRIPT, str(src), str(tmp / "ort.onnx"),
                    str(SAMPLES)])
    ours = measured([sys.executable, "-m", "edgesim", "compile", str(src), "--target", target,
                     "--method", method, "--calib-random", str(SAMPLES), "--quiet",
                     "-o", str(tmp / f"{name}-out")])
    return {"model": name, "method": method, "target": target, "samples": SAMPLES,
            "edgesim_compile": ours, "ort_quantize_static": ort,
            "time_ratio": round(ours["seconds"] / ort["seconds"], 2),
            "memory_ratio": round(ours["peak_mib"] / ort["peak_mib"], 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="mobilenet_v2,resnet50,minilm")
    p.add_argument("--method", default="hawq")
    p.add_argument("--target", default="rpi5")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # numba compiles its kernels into an on-disk cache on first use after an install (or a
        # source change); one untimed run keeps that one-time cost out of the figures
        measured([sys.executable, "-m", "edgesim", "compile", "--example", "--target",
                  args.target, "--quiet", "-o", str(Path(tmp) / "warm-up")])
        rows = [bench(m, args.method, args.target, Path(tmp)) for m in args.models.split(",")]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
