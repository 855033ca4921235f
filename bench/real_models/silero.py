"""silero-vad v5 voice-activity detector (package `silero-vad`, its `silero_vad.onnx`: an
`If` on the `sr` input (pinned to 16000) around STFT + Conv encoder, inner `If`s on shapes and
an LSTM decoder, a [2, B, 128] state whose samples are on axis 1). Streamed as silero's
OnnxWrapper does: 512-sample chunks with 64 samples of context, the state carried along.
onnxruntime's quantisers get the file as edgesim's frontend flattens it (`flattened`): they
skip the layers inside `If` branches.

The audio is SYNTHETIC, built here: voiced stretches (a glottal pulse train at 90-260 Hz with
jitter, through three formant resonators that glide, with a 3-6 Hz syllable envelope),
unvoiced noise bursts, and quiet background noise. Its labels are not speech ground truth,
so the metric is the agreement of the chunk decisions (probability > 0.5) with fp32's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from edgesim.evaluate import session
from real_models import RealModel, extract, flattened, session_inputs

PACKAGE = "silero-vad==6.2.3"
MODEL = "silero_vad/data/silero_vad.onnx"
RATE, CHUNK, CONTEXT, CHUNKS = 16000, 512, 64, 48
INPUT_SHAPES = {"input": [1, CHUNK + CONTEXT], "state": [2, 1, 128]}


def _resonate(x: np.ndarray, freq: np.ndarray, bw: float) -> np.ndarray:
    """A two-pole resonator whose centre glides with `freq` (piecewise, per 256 samples)."""
    out = np.zeros_like(x)
    r = np.exp(-np.pi * bw / RATE)
    for s in range(0, len(x), 256):
        a = [1, -2 * r * np.cos(2 * np.pi * freq[s] / RATE), r * r]
        out[s:s + 256] = lfilter([1 - r], a, x[s:s + 256])
    return out


def voiced(rng: np.random.Generator, n: int) -> np.ndarray:
    """A vowel-like stretch: jittered pulse train, gliding formants, syllable envelope."""
    f0 = rng.uniform(90, 260) * (1 + 0.05 * np.sin(np.linspace(0, 6, n)))
    phase = np.cumsum(f0 * (1 + 0.01 * rng.standard_normal(n)) / RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    sig = sum(_resonate(pulses, np.linspace(*rng.uniform(lo, hi, 2), n), bw)
              for lo, hi, bw in ((300, 900, 80), (900, 2300, 100), (2300, 3200, 150)))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * np.arange(n) / RATE) ** 2
    return sig * env / (np.abs(sig).max() + 1e-9) * rng.uniform(0.2, 0.8)


def clip(rng: np.random.Generator) -> np.ndarray:
    """CHUNKS * 512 samples: background noise with voiced and unvoiced segments."""
    n = CHUNKS * CHUNK
    x = 0.003 * rng.standard_normal(n)
    start = 0
    while start < n:
        length = int(rng.integers(2000, 12000))
        kind = rng.choice(["voiced", "voiced", "noise", "quiet"])
        seg = x[start:start + length]
        if kind == "voiced":
            seg += voiced(rng, len(seg))
        elif kind == "noise":
            seg += 0.1 * rng.standard_normal(len(seg))
        start += length
    return x.astype(np.float32)


def stream(path: Path, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Speech probability per chunk [clips, CHUNKS], and the (input, state) fed at each."""
    sess = session(path)
    probs, inputs, states = [], [], []
    for a in audio:
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros((1, CONTEXT), np.float32)
        for c in range(CHUNKS):
            x = np.concatenate([context, a[None, c * CHUNK:(c + 1) * CHUNK]], axis=1)
            feed = {"input": x, "state": state, "sr": np.array(RATE, np.int64)}
            inputs.append(x)
            states.append(state)
            prob, state = sess.run(None, session_inputs(sess, feed))
            probs.append(float(prob.ravel()[0]))
            context = x[:, -CONTEXT:]
    return (np.array(probs).reshape(len(audio), CHUNKS), np.concatenate(inputs),
            np.concatenate(states, axis=1))


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: (chunk, state) pairs from 4 fp32-streamed clips calibrate; `n_eval` // 8
    clips of 48 chunks (1.5 s) evaluate."""
    path = extract(PACKAGE, MODEL, cache)
    rng = np.random.default_rng(0)
    _, x, state = stream(path, np.stack([clip(rng) for _ in range(4)]))
    pick = np.random.default_rng(1).choice(len(x), 96, replace=False)
    rng = np.random.default_rng(1)
    audio = np.stack([clip(rng) for _ in range(max(2, n_eval // 8))])
    return RealModel(
        name="silero-vad v5 (synthetic audio, 512-sample chunks)", path=path,
        ort_path=flattened(path, cache / "silero_vad_flat.onnx", INPUT_SHAPES, {"sr": RATE},
                           {"state": 1}),
        calib={"input": x[pick], "state": state[:, pick]}, batch_axes={"state": 1},
        metrics=("chunk decision agreement with fp32", "mean |prob - fp32 prob|"),
        run=lambda p: stream(p, audio)[0],
        score=lambda ref, got: {
            "chunk decision agreement with fp32": float(np.mean((ref > .5) == (got > .5))),
            "mean |prob - fp32 prob|": float(np.mean(np.abs(ref - got)))},
        compile_kw={"input_values": {"sr": RATE}, "batch_axes": {"state": 1},
                    "input_shapes": INPUT_SHAPES})
