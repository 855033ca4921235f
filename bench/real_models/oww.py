"""openWakeWord 0.4.0's three-stage wake-word chain (package `openwakeword==0.4.0`, the last
release whose wheel ships its ONNX models): 16 kHz int16-scale audio -> `melspectrogram.onnx`
(STFT as 1-D Convs, mel MatMul, log) -> /10 + 2 -> windows of 76 frames x 32 mels, every 8
frames -> `embedding_model.onnx` (NHWC convs, LeakyRelu, Max) -> 96 values per window -> 16
windows -> `hey_jarvis_v0.1.onnx` (Gemm + LayerNorm MLP whose score >= 0.5 gates a verifier
MLP through an `If` on the data; onnxruntime's quantisers get it flattened, `flattened`) ->
wake-word score. A clip is detected when its best score
over the windows is >= 0.5, as openWakeWord's default threshold.

The speech is SPOKEN HERE by espeak-ng (Debian package `espeak-ng`, needed): "hey jarvis"
(positive) and other phrases (negative) in several voices, speeds and pitches, centred in
2.5 s of quiet noise. On the 32 evaluation clips fp32 misses 3 of 16 positives and
flags no negative (accuracy 0.906).

Each of the three cases (`oww_melspec`, `oww_embedding`, `oww_hey_jarvis`) swaps one stage
for the variant's file and keeps the other two fp32."""

from __future__ import annotations

import io
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgesim.evaluate import session
from real_models import RealModel, extract, flattened

PACKAGE = "openwakeword==0.4.0"
MODELS = "openwakeword/resources/models/"
RATE, SAMPLES, WINDOW, STEP, CONTEXT = 16000, 40000, 76, 8, 16
POSITIVE = ("hey jarvis",)
NEGATIVE = ("hey marvin", "good morning", "what time is it", "jarvis", "hey there",
            "turn on the lights", "play some music", "hello travis")
VOICES = ("en-us", "en", "en-gb-x-rp", "en-us+f3", "en+m3", "en-gb-scotland", "en+f2")
STAGES = ("melspectrogram", "embedding_model", "hey_jarvis_v0.1")


def say(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """`text` spoken by espeak-ng, resampled to 16 kHz, int16 scale (float32)."""
    from scipy.signal import resample_poly

    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return resample_poly(pcm.astype(np.float32), RATE, rate).astype(np.float32)


def clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` clips [n, SAMPLES] (every other one positive) and their labels (1 = wake word)."""
    rng = np.random.default_rng(seed)
    audio, labels = [], []
    for i in range(n):
        label = i % 2 == 0
        text = str(rng.choice(POSITIVE if label else NEGATIVE))
        speech = say(text, str(rng.choice(VOICES)), int(rng.integers(120, 190)),
                     int(rng.integers(30, 70)))[:SAMPLES - RATE]
        x = rng.normal(0, 30, SAMPLES).astype(np.float32)  # quiet room noise
        start = int(rng.integers(RATE // 2, SAMPLES - len(speech) - RATE // 4))
        x[start:start + len(speech)] += speech * rng.uniform(0.5, 1.0)
        audio.append(np.clip(x, -32768, 32767))
        labels.append(int(label))
    return np.stack(audio).astype(np.float32), np.array(labels)


def mels(path: Path, audio: np.ndarray) -> np.ndarray:
    """Mel features [clips, frames, 32], scaled as openWakeWord does (/10 + 2)."""
    sess = session(path)
    return np.stack([sess.run(None, {"input": a[None]})[0].squeeze() / 10 + 2 for a in audio])


def embeddings(path: Path, mel: np.ndarray) -> np.ndarray:
    """Embeddings [clips, windows, 96] of 76-frame mel windows every 8 frames."""
    sess = session(path)
    starts = range(0, mel.shape[1] - WINDOW + 1, STEP)
    out = []
    for m in mel:
        wins = np.stack([m[s:s + WINDOW] for s in starts])[..., None].astype(np.float32)
        out.append(sess.run(None, {"input_1": wins})[0].reshape(len(wins), -1))
    return np.stack(out)


def contexts(emb: np.ndarray) -> np.ndarray:
    """The classifier's inputs: every 16 consecutive embeddings [clips, n, 16, 96]."""
    n = emb.shape[1] - CONTEXT + 1
    return np.stack([np.stack([e[i:i + CONTEXT] for i in range(n)]) for e in emb])


def scores(path: Path, ctx: np.ndarray) -> np.ndarray:
    """The best wake-word score of each clip (the model takes batch 1)."""
    sess = session(path)
    return np.array([max(float(sess.run(None, {"x.1": c[None]})[0].ravel()[0]) for c in clip)
                     for clip in ctx])


def chain(stage: int, audio: np.ndarray, paths: list[Path]) -> Callable[[Path], np.ndarray]:
    """Best score per clip with stage `stage` run from the variant's file."""
    def run(variant: Path) -> np.ndarray:
        p = [variant if i == stage else q for i, q in enumerate(paths)]
        return scores(p[2], contexts(embeddings(p[1], mels(p[0], audio))))
    return run


def score_metrics(y: np.ndarray) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    def score(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
        return {"detection agreement with fp32": float(np.mean((ref >= 0.5) == (got >= 0.5))),
                "accuracy": float(np.mean((got >= 0.5) == y)),
                "mean |score - fp32 score|": float(np.mean(np.abs(got - ref)))}
    return score


def case(stage: int, cache: Path, n_eval: int) -> RealModel:
    """The case quantising stage `stage`: 16 clips calibrate, `n_eval` others evaluate."""
    paths = [extract(PACKAGE, f"{MODELS}{s}.onnx", cache) for s in STAGES]
    calib_audio, _ = clips(16, 0)
    audio, y = clips(n_eval, 1)
    mel = mels(paths[0], calib_audio)
    if stage == 0:
        calib = {"input": calib_audio}
    elif stage == 1:
        calib = {"input_1": np.concatenate([np.stack([m[s:s + WINDOW] for s in range(
            0, mel.shape[1] - WINDOW + 1, STEP)]) for m in mel])[..., None].astype(np.float32)}
    else:
        calib = {"x.1": contexts(embeddings(paths[1], mel)).reshape(-1, CONTEXT, 96)}
    return RealModel(
        name=f"openWakeWord hey_jarvis chain, {STAGES[stage]} quantised (espeak-ng speech)",
        path=paths[stage], calib=calib,
        metrics=("detection agreement with fp32", "accuracy", "mean |score - fp32 score|"),
        run=chain(stage, audio, paths), score=score_metrics(y),
        compile_kw={"input_shapes": {"input": [1, SAMPLES]}} if stage == 0 else {},
        # onnxruntime's quantisers skip the verifier inside hey_jarvis's If: they get the
        # file as edgesim's frontend flattens it (both branches and a Where)
        ort_path=flattened(paths[2], cache / "extracted" / "hey_jarvis_flat.onnx", {})
        if stage == 2 else None)
