"""Spotify's Basic Pitch note transcriber (package `basic-pitch`, its `nmp.onnx`: a tf2onnx
export whose graph computes its own constant-Q transform from raw audio with Convs, then
log-magnitude, batch-norm-like normalisation and a small CNN). Input: 2 s windows of 22.05 kHz
mono audio [N, 43844, 1]; outputs: pitch contour [N, 172, 264], note frames [N, 172, 88] and
note onsets [N, 172, 88] (posteriors per 11.6 ms frame and piano key; the package calls a frame
on at >= 0.3 and an onset at >= 0.5).

The music is SYNTHESISED HERE: each clip holds 3-6 notes (MIDI 40-84, harmonic tones with a
short attack and an exponential decay, random onsets and lengths) over faint noise, so each
frame's true piano keys are known. Metrics: the F1 of the note frames (>= 0.3) against fp32's,
the same against the synthesised truth, the onset F1 (>= 0.5) against fp32's, and the SQNR of
the note posteriors against fp32's. fp32 finds 0.81 F1 of the true note frames (the quiet
tails of the decays are the misses).

Measured 2026-12-07 (12 evaluation clips, loaded host; note-frame F1 vs fp32, F1 vs truth,
onset F1, SQNR dB, file MB): onnxruntime dynamic int8 0.904 0.890 0.873 20.7 0.239; its
static QDQ file does not load (a Transpose of a per-channel weight scale, also on the
flattened model); MatMulNBits leaves it as is (no MatMul); edgesim W8A8 0.885 0.903 0.854 18.8
0.296 (every range method alike); W4 0.760 (flagged, 10.9 dB); the knee 0.983 0.825 0.983
35.7 0.290 (it keeps the constant-Q Convs float). Edgesim's files are larger than the fp32
file (0.230 MB): the tf2onnx names (up to 300 characters) are repeated in every Q/DQ node's
and scale's name, 186 kB of the W8A8 file's 284 kB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesim.evaluate import session, sqnr_db
from real_models import RealModel, extract

PACKAGE = "basic-pitch==0.4.0"
MODEL = "basic_pitch/saved_models/icassp_2022/nmp.onnx"
INPUT = "serving_default_input_2:0"
NOTE, ONSET = "StatefulPartitionedCall:1", "StatefulPartitionedCall:2"
RATE, SAMPLES, FRAMES, HOP, LOWEST = 22050, 43844, 172, 256, 21  # LOWEST: MIDI of key 0
FRAME_ON, ONSET_ON = 0.3, 0.5


def clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` clips [n, SAMPLES, 1] and each one's true note frames [n, FRAMES, 88] (bool)."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / RATE
    audio = np.zeros((n, SAMPLES), np.float64)
    truth = np.zeros((n, FRAMES, 88), bool)
    for i in range(n):
        for _ in range(int(rng.integers(3, 7))):
            midi = int(rng.integers(40, 85))
            start, length = rng.uniform(0.0, 1.6), rng.uniform(0.25, 1.0)
            on = (t >= start) & (t < start + length)
            tt = t[on] - start
            envelope = np.minimum(tt / 0.01, 1.0) * np.exp(-tt * rng.uniform(1.0, 4.0))
            f0 = 440.0 * 2 ** ((midi - 69) / 12)
            tone = sum(np.sin(2 * np.pi * k * f0 * tt) / k for k in range(1, 7)
                       if k * f0 < RATE / 2)
            audio[i, on] += rng.uniform(0.1, 0.3) * envelope * tone
            first, last = int(start * RATE / HOP), int((start + length) * RATE / HOP)
            truth[i, first:min(last, FRAMES), midi - LOWEST] = True
        audio[i] += rng.normal(0, 1e-3, SAMPLES)
    return audio[..., None].astype(np.float32), truth


def posteriors(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """The note and onset posteriors of each clip, run one clip at a time."""
    sess = session(path)
    got = [sess.run([NOTE, ONSET], {INPUT: x[i:i + 1]}) for i in range(len(x))]
    return {k: np.concatenate([g[j] for g in got]) for j, k in enumerate((NOTE, ONSET))}


def f1(ref: np.ndarray, got: np.ndarray) -> float:
    """F1 of the boolean `got` against `ref` (1.0 when both are empty)."""
    hits, total = np.sum(ref & got), np.sum(ref) + np.sum(got)
    return 1.0 if total == 0 else float(2 * hits / total)


def score(truth: np.ndarray, ref: dict[str, np.ndarray],
          got: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        "note-frame F1 vs fp32": f1(ref[NOTE] >= FRAME_ON, got[NOTE] >= FRAME_ON),
        "note-frame F1 vs truth": f1(truth, got[NOTE] >= FRAME_ON),
        "onset F1 vs fp32": f1(ref[ONSET] >= ONSET_ON, got[ONSET] >= ONSET_ON),
        "SQNR dB of note posteriors vs fp32": sqnr_db(ref[NOTE], got[NOTE])}


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 24 clips calibrate, `n_eval` // 2 others (2 s each) evaluate."""
    calib, _ = clips(24, 0)
    x, truth = clips(max(1, n_eval // 2), 1)
    return RealModel(
        name="Basic Pitch (synthesised notes)", path=extract(PACKAGE, MODEL, cache),
        calib={INPUT: calib},
        metrics=("note-frame F1 vs fp32", "note-frame F1 vs truth", "onset F1 vs fp32",
                 "SQNR dB of note posteriors vs fp32"),
        run=lambda p: posteriors(p, x), score=lambda ref, got: score(truth, ref, got),
        compile_kw={"input_shapes": {INPUT: [1, SAMPLES, 1]}})
