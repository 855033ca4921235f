"""EfficientWord-Net's few-shot hotword embedder (package `efficientword-net`, its
`resnet_50_arc` model: a PyTorch ResNet-50 with ArcFace-style training, 87.6 MB; input the
log mel filterbank [1, 1, 149, 64] of 1.5 s of 16 kHz audio, min-max normalised inside the
graph; output a unit-length embedding [1, 2048]). The package ships reference embeddings of 7
hotwords (alexa, balloon, computer, lights on / off, mobile, mycroft) and scores a window by
(cosine + 1) / 2 against the best of a hotword's references, firing at 0.7 (balloon 0.65); its
multi-hotword detector picks the best hotword over its threshold.

The speech is SPOKEN HERE by espeak-ng (Debian package `espeak-ng`, needed): each hotword and
other words in several voices, speeds and pitches, centred in 1.5 s of quiet noise; the
features are python_speech_features' `logfbank` as the package calls it (re-implemented here,
checked equal to it). Metrics: agreement of the detected hotword (or none) with fp32's,
accuracy against the spoken word, the mean |score - fp32 score| over clips and hotwords, and
the embeddings' mean cosine with fp32's. fp32 gets 16 of 24 clips right (it misses most
espeak-ng "alexa", "balloon" and "mycroft" clips, scoring them 0.60-0.67).

Measured 2026-12-07 (24 evaluation clips, loaded host; mean |score error|, embedding cosine,
file MB): every 8-bit file agrees with fp32 on every clip: onnxruntime dynamic int8 0.0011
0.9987 22.1, static QDQ 0.0017 0.9973 22.5, the package's own shipped qint8 file 0.0023
0.9943 22.1; edgesim W8A8 (auto ranges) 0.0010 0.9986 22.4, percentile 0.0018 0.9968; the
knee 0.0009 0.9994 37.3. Uniform W4 (11.3 MB) loses one clip of 24: 0.0094, 0.932 (flagged:
SQNR 9.3 dB)."""

from __future__ import annotations

import io
import json
import subprocess
import wave
from pathlib import Path

import numpy as np

from edgesim.evaluate import session
from real_models import RealModel, extract

PACKAGE = "efficientword-net==1.0.5"
ROOT = "eff_word_net/"
MODEL = ROOT + "models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx"
HOTWORDS = {"alexa": 0.7, "balloon": 0.65, "computer": 0.7, "lights_on": 0.7,
            "lights_off": 0.7, "mobile": 0.7, "mycroft": 0.7}
OTHERS = ("hello", "banana", "weather", "open the door", "good night", "microphone", "lettuce")
VOICES = ("en-us", "en", "en-gb-x-rp", "en-us+f3", "en+m3", "en-gb-scotland", "en+f2")
RATE, SAMPLES, NFFT, NFILT = 16000, 24000, 512, 64


def say(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """`text` spoken by espeak-ng, resampled to 16 kHz, int16 scale (float64)."""
    from scipy.signal import resample_poly

    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return resample_poly(pcm.astype(np.float64), RATE, rate)


def _filterbank() -> np.ndarray:
    """python_speech_features.get_filterbanks(64, 512, 16000): triangles on the mel scale."""
    mel = np.linspace(0, 2595 * np.log10(1 + RATE / 2 / 700), NFILT + 2)
    bins = np.floor((NFFT + 1) * 700 * (10 ** (mel / 2595) - 1) / RATE)
    fb = np.zeros((NFILT, NFFT // 2 + 1))
    for j in range(NFILT):
        lo, mid, hi = bins[j:j + 3]
        for i in range(int(lo), int(mid)):
            fb[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            fb[j, i] = (hi - i) / (hi - mid)
    return fb


def logfbank(audio: np.ndarray) -> np.ndarray:
    """python_speech_features.logfbank(audio, 16000, 0.025, 0.01, 64, 512, preemph=0):
    rectangular 400-sample frames every 160 (the last zero-padded), power spectrum / NFFT."""
    frames = 1 + int(np.ceil((len(audio) - 400) / 160))
    padded = np.concatenate([audio, np.zeros((frames - 1) * 160 + 400 - len(audio))])
    idx = np.arange(400)[None, :] + 160 * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(padded[idx], NFFT)) ** 2 / NFFT
    feat = power @ _filterbank().T
    return np.log(np.where(feat == 0, np.finfo(float).eps, feat))


def clips(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """`n` clips' features [n, 1, 149, 64] and the word each says ("none" for other words):
    two hotword clips for every other word."""
    rng = np.random.default_rng(seed)
    x, words = [], []
    for i in range(n):
        word = list(HOTWORDS)[(i // 3 * 2 + i % 3) % len(HOTWORDS)] if i % 3 != 2 else "none"
        text = word.replace("_", " ") if word != "none" else str(rng.choice(OTHERS))
        speech = say(text, str(rng.choice(VOICES)), int(rng.integers(120, 180)),
                     int(rng.integers(30, 70)))[:SAMPLES]
        audio = rng.normal(0, 30, SAMPLES)
        at = (SAMPLES - len(speech)) // 2 + int(rng.integers(-1600, 1601))
        at = min(max(at, 0), SAMPLES - len(speech))
        audio[at:at + len(speech)] += speech
        x.append(logfbank(audio)[None].astype(np.float32))
        words.append(word)
    return np.stack(x), words


def references(cache: Path) -> dict[str, np.ndarray]:
    """The package's reference embeddings per hotword [k, 2048]."""
    return {w: np.array(json.loads(extract(PACKAGE, f"{ROOT}sample_refs/{w}_ref.json",
                                           cache).read_text())["embeddings"])
            for w in HOTWORDS}


def embeddings(path: Path, x: np.ndarray) -> np.ndarray:
    sess = session(path)
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def scores(refs: dict[str, np.ndarray], emb: np.ndarray) -> np.ndarray:
    """[n, hotwords]: the package's score, (cosine + 1) / 2 with the best reference."""
    return np.stack([((refs[w] @ emb.T + 1) / 2).max(0) for w in HOTWORDS], 1)


def detected(s: np.ndarray) -> np.ndarray:
    """The hotword the multi-hotword detector reports per clip ("none" under thresholds)."""
    over = np.where(s >= np.array(list(HOTWORDS.values())), s, -1.0)
    return np.where(over.max(1) >= 0, np.array(list(HOTWORDS))[over.argmax(1)], "none")


def score(refs: dict[str, np.ndarray], words: list[str], ref: np.ndarray,
          got: np.ndarray) -> dict[str, float]:
    s_ref, s_got = scores(refs, ref), scores(refs, got)
    cos = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return {"hotword agreement with fp32": float(np.mean(detected(s_ref) == detected(s_got))),
            "accuracy": float(np.mean(detected(s_got) == np.array(words))),
            "mean |score - fp32 score|": float(np.mean(np.abs(s_got - s_ref))),
            "embedding cosine with fp32": float(np.mean(cos))}


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 24 clips calibrate, `n_eval` others evaluate."""
    calib, _ = clips(24, 0)
    x, words = clips(n_eval, 1)
    refs = references(cache)
    return RealModel(
        name="EfficientWord-Net ResNet-50 (espeak-ng words)", path=extract(PACKAGE, MODEL, cache),
        calib={"input": calib},
        metrics=("hotword agreement with fp32", "accuracy", "mean |score - fp32 score|",
                 "embedding cosine with fp32"),
        run=lambda p: embeddings(p, x), score=lambda ref, got: score(refs, words, ref, got))
