"""Benchmark: edgesim's quantised models against onnxruntime's own quantisers, in one run.

For each model: fp32, edgesim W8A8, edgesim W4 (weight-only), onnxruntime `quantize_static`
(QDQ, default all-operator and MatMul/Gemm/Conv-only; int8 weights and activations) and
onnxruntime's `MatMulNBitsQuantizer` (4-bit, block 32, symmetric). Per variant: onnxruntime
CPU latency at batch 1 with 1 and 2 threads (median of 30 runs, the variants interleaved
round-robin so that other load on the machine hits them alike) and agreement with the
fp32 model on evaluation inputs (cosine, top-1 agreement, SQNR; accuracy where labels exist).
Every variant is calibrated on the same samples. Prints JSON (and writes it with --out).

    python bench/bench_quantize.py [--models digits_cnn,digits_transformer,minilm] [--out f]

`MatMulNBitsQuantizer` needs the `onnx_ir` package; without it that variant is reported as
unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim import zoo  # noqa: E402
from edgesim.calibration import random_samples  # noqa: E402
from edgesim.evaluate import agreement, session  # noqa: E402
from edgesim.quantize import quantize_model  # noqa: E402

RUNS = 30


def _digits_data(n_calib: int) -> tuple[dict, dict, np.ndarray]:
    d = zoo.load_digits_data()
    return {"input": d["x_calib"][:n_calib]}, {"input": d["x_test"]}, d["y_test"]


def _token_data(model: onnx.ModelProto, n_calib: int, n_eval: int) -> tuple[dict, dict, None]:
    from edgesim.api import load_graph

    g = load_graph(model)
    calib = random_samples(g, n_calib, seed=0).samples
    evals = dict(random_samples(g, n_eval, seed=1).samples)
    return dict(calib), evals, None


MODELS = {
    "digits_cnn": lambda: (zoo.build("digits_cnn"), *_digits_data(200)),
    "digits_transformer": lambda: (zoo.build("digits_transformer"), *_digits_data(200)),
    "minilm": lambda: (m := zoo.build("minilm"), *_token_data(m, 16, 8)),
    "vit_tiny": lambda: (zoo.build("vit_tiny"), {"pixel_values": np.random.default_rng(0)
                         .standard_normal((8, 3, 224, 224)).astype(np.float32)},
                         {"pixel_values": np.random.default_rng(1).standard_normal(
                             (4, 3, 224, 224)).astype(np.float32)}, None),
}


def samples(data: dict) -> list[dict]:
    """Batch-1 feeds, one per sample along axis 0 of every input."""
    n = len(next(iter(data.values())))
    return [{k: v[i:i + 1] for k, v in data.items()} for i in range(n)]


class CalibrationReader:
    """onnxruntime CalibrationDataReader over batch-1 samples."""

    def __init__(self, data: dict) -> None:
        self._it = iter(samples(data))

    def get_next(self) -> dict | None:
        return next(self._it, None)


def ort_static(model: onnx.ModelProto, calib: dict, out: Path, mac_only: bool) -> Path:
    from onnxruntime.quantization import QuantFormat, quantize_static

    src = out.with_suffix(".src.onnx")
    onnx.save(model, src)
    ops = ["MatMul", "Gemm", "Conv"] if mac_only else None
    quantize_static(str(src), str(out), CalibrationReader(calib), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=ops)
    return out


def ort_nbits(model: onnx.ModelProto, out: Path) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True)
    q.process()
    q.model.save_model_to_file(str(out))
    return out


def _outputs(path: Path, evals: dict) -> dict[str, np.ndarray]:
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    rows = [sess.run(names, s) for s in samples(evals)]
    return {n: np.concatenate([r[i] for r in rows]) for i, n in enumerate(names)}


def _sentence(y: np.ndarray) -> np.ndarray:
    """Per-sample vectors: logits as they are, token states mean-pooled (sentence embedding)."""
    return y.mean(axis=1) if y.ndim == 3 else y


def _score(ref: dict, got: dict, labels: np.ndarray | None) -> dict:
    name = next(iter(ref))
    a = agreement(_sentence(ref[name]), _sentence(got[name]), labels)
    return {"output": name, "cosine": round(a.cosine, 5), "sqnr_db": round(a.sqnr_db, 2),
            "top1_agreement": round(a.top1_agreement, 4),
            "accuracy": None if a.accuracy is None else round(a.accuracy, 4)}


def _interleaved_latency(paths: dict[str, Path], evals: dict, threads: int) -> dict[str, float]:
    """Median latency per variant, the variants run round-robin in a shuffled order each
    round, so that load from other processes on the machine hits them all alike."""
    from edgesim.evaluate import session

    feed = samples(evals)[0]
    sessions = {k: session(p, threads) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    rng = np.random.default_rng(0)
    for _ in range(3):  # warm-up
        for s in sessions.values():
            s.run(None, feed)
    for _ in range(RUNS):
        for k in rng.permutation(list(paths)):
            start = time.perf_counter()
            sessions[k].run(None, feed)
            times[k].append((time.perf_counter() - start) * 1e3)
    return {k: round(float(np.median(v)), 4) for k, v in times.items()}


def _variants(model: onnx.ModelProto, calib: dict, tmp: Path) -> dict[str, object]:
    from edgesim.calibration import CalibrationData

    data = CalibrationData(calib, f"{len(next(iter(calib.values())))} bench samples")
    fp32 = tmp / "fp32.onnx"
    onnx.save(model, fp32)
    return {
        "fp32": lambda: fp32,
        "edgesim_w8a8": lambda: Path(quantize_model(model, 8, calib=data,
                                                    out=tmp / "es8.onnx").out),
        "edgesim_w4": lambda: Path(quantize_model(model, 4, out=tmp / "es4.onnx").out),
        "ort_qdq_all_ops": lambda: ort_static(model, calib, tmp / "ort_all.onnx", False),
        "ort_qdq_matmul_gemm_conv": lambda: ort_static(model, calib, tmp / "ort_mac.onnx", True),
        "ort_matmulnbits_w4": lambda: ort_nbits(model, tmp / "ort_nbits.onnx"),
    }


def bench_model(name: str) -> dict:
    model, calib, evals, labels = MODELS[name]()
    rows: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ref = None
        for label, make in _variants(model, calib, tmp).items():
            start = time.perf_counter()
            try:
                path = make()
            except Exception as e:  # a quantiser that fails on this model is a result too
                rows[label] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                continue
            made_s = time.perf_counter() - start
            out = _outputs(path, evals)
            ref = out if ref is None else ref
            paths[label] = path
            rows[label] = {"quantize_s": round(made_s, 2), "file_bytes": path.stat().st_size,
                           **_score(ref, out, labels)}
        for threads in (1, 2):
            for label, ms in _interleaved_latency(paths, evals, threads).items():
                rows[label][f"latency_ms_{threads}t"] = ms
    for label, row in rows.items():
        print(name, label, row, file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits_cnn,digits_transformer,minilm")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import onnxruntime

    result = {"onnxruntime": onnxruntime.__version__, "runs": RUNS,
              "models": {m: bench_model(m) for m in args.models.split(",")}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
