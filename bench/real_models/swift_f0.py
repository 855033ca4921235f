"""SwiftF0's pitch detector (package `swift-f0`, its `model.onnx`, 135 kB: the graph computes
its own STFT from raw 16 kHz audio with MatMuls on DFT matrices it builds from Sin/Cos/
ScatterElements at run time, then log-magnitude and a small CNN scoring 95 log-spaced pitch
steps). Inputs: audio [1, samples], fmin and fmax (pinned here to the model's whole range,
46.875-2093.75 Hz, as the package does when none is given); outputs: pitch in Hz and a voicing
confidence per 256-sample frame (voiced at >= 0.5, the package's threshold).

edgesim refuses the file as shipped ("unsupported ops: Cos, ScatterElements, Sin"), though those
nodes read no input: they only build the DFT matrices from constants. Both edgesim and
onnxruntime's quantisers get it with those constants folded by onnxruntime's basic graph
optimisation (`folded`), the same function.

The singing is SYNTHESISED HERE: each 1 s clip is one harmonic tone (f0 log-uniform 70-900 Hz
with 4-7 Hz vibrato, 8 random harmonic amplitudes), half the clips with a silent stretch, over
faint noise, so every frame's true f0 and voicing are known. Metrics: voicing agreement with
fp32, voicing accuracy against the truth, raw pitch accuracy (voiced frames within 50 cents of
the true f0) and the mean pitch difference in cents from fp32 on frames both call voiced.
The pitch of an unvoiced frame is meaningless, which is why no SQNR of the pitch output.

Measured 2026-12-08, load 7-9 on 2 cores (32 evaluation clips; voicing agreement with fp32,
voicing accuracy, RPA, mean |cents| from fp32, file MB): fp32 1.0 0.965 0.999 0 1.09;
onnxruntime dynamic 0.920 0.887 0.987 48.7 0.37, static QDQ 0.978 0.942 0.988 62.2 0.36,
MatMulNBits (its 15 constant MatMuls, float activations) 1.0 0.964 0.999 1.7 0.33; edgesim
W8A8 (auto ranges and minmax: the same outputs) 0.969 0.934 0.999 4.4 0.38, W4 0.406 0.379
1.0 5.3 0.28 (NaN in 79 % of its frames), the knee 0.992 0.957 0.999 1.1 1.07 (it keeps most
layers float). edgesim's own fidelity check reads the first output, pitch, over every frame,
and flags every one of its files as collapsed (SQNR 2.4 dB W8A8, 6.2 the knee), though their
voiced pitch is within a few cents of fp32's: an unvoiced frame's pitch moves by octaves at
any error."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesim.evaluate import session
from real_models import RealModel, extract, session_inputs

PACKAGE = "swift-f0==0.3.0"
MODEL = "swift_f0/model.onnx"
RATE, SAMPLES, HOP = 16000, 16384, 256
FRAMES = SAMPLES // HOP
FMIN, FMAX = 46.875, 2093.75  # the model's range (swift_f0.core.FMIN / FMAX)
VOICED = 0.5  # the package's confidence threshold


def folded(cache: Path) -> Path:
    """The model with its constant-only subgraphs (the DFT matrices) folded by onnxruntime's
    basic optimisation level (standard ops only; no fusions into its own domains)."""
    import onnxruntime as ort

    out = cache / "extracted" / "swift_f0_folded.onnx"
    if not out.exists():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(extract(PACKAGE, MODEL, cache)), opts,
                             providers=["CPUExecutionProvider"])
    return out


def clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` clips [n, SAMPLES], each frame's true f0 [n, FRAMES] and voicing [n, FRAMES]."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / RATE
    frame = np.minimum(np.arange(FRAMES) * HOP, SAMPLES - 1)  # the sample each frame sits on
    xs, f0s, ons = [], [], []
    for _ in range(n):
        f0 = 2 ** rng.uniform(np.log2(70), np.log2(900)) * (
            1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        amps = rng.uniform(0.2, 1, 8) / np.arange(1, 9)
        x = sum(a * np.sin(k * phase) for k, a in enumerate(amps, 1) if k * f0.max() < RATE / 2)
        on = np.ones(SAMPLES)
        a, b = sorted(rng.integers(0, SAMPLES, 2))
        if rng.random() < 0.5:
            on[a:b] = 0
        x = x * on / np.abs(x).max() * rng.uniform(0.1, 0.7)
        xs.append(x + rng.uniform(0.001, 0.02) * rng.standard_normal(SAMPLES))
        f0s.append(f0[frame])
        ons.append(on[frame] > 0)
    return np.stack(xs).astype(np.float32), np.stack(f0s), np.stack(ons)


def detect(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pitch and confidence [clips, FRAMES], one clip per run as the package feeds them."""
    sess = session(path)
    out = [sess.run(None, session_inputs(sess, {
        "audio": x[i:i + 1], "fmin": np.array(FMIN, np.float32),
        "fmax": np.array(FMAX, np.float32)})) for i in range(len(x))]
    return np.stack([p[0] for p, _ in out]), np.stack([c[0] for _, c in out])


def score(f0: np.ndarray, on: np.ndarray, ref: tuple[np.ndarray, np.ndarray],
          got: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    pitch, voiced = got[0], got[1] >= VOICED
    ref_voiced = ref[1] >= VOICED
    both, hit = voiced & ref_voiced, voiced & on
    return {"voicing agreement with fp32": float(np.mean(voiced == ref_voiced)),
            "voicing accuracy": float(np.mean(voiced == on)),
            "raw pitch accuracy (50 cents)": float(np.mean(
                np.abs(1200 * np.log2(pitch[hit] / f0[hit])) < 50)),
            "mean |cents from fp32| (voiced)": float(np.mean(
                np.abs(1200 * np.log2(pitch[both] / ref[0][both])))) if both.any() else 0.0}


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 16 clips calibrate, `n_eval` // 2 others (1 s each) evaluate."""
    calib, _, _ = clips(16, 0)
    x, f0, on = clips(max(1, n_eval // 2), 1)
    return RealModel(
        name="SwiftF0 pitch (synthesised singing)", path=folded(cache),
        calib={"audio": calib},
        metrics=("voicing agreement with fp32", "voicing accuracy",
                 "raw pitch accuracy (50 cents)", "mean |cents from fp32| (voiced)"),
        run=lambda p: detect(p, x), score=lambda ref, got: score(f0, on, ref, got),
        compile_kw={"input_shapes": {"audio": [1, SAMPLES]},
                    "input_values": {"fmin": FMIN, "fmax": FMAX}})
