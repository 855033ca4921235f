"""PP-OCRv4 text-line recogniser (package `rapidocr-onnxruntime`: Conv backbone + SVTR
attention, CTC over 6625 characters, the dictionary in the model's `character` metadata).
Evaluation lines (English words, numbers, punctuation) are rendered here with Pillow's default
font, black on white, at the model's input height 48, normalised and right-padded to width 320
as rapidocr does. Metrics: exact match of the CTC-decoded strings with fp32's, and character
accuracy (1 - edit distance / length) against the rendered text. Its weights are Constant
nodes (Paddle export), which onnxruntime's quantisers skip: they get the file with them
lifted to initializers (`flattened`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from PIL import Image, ImageDraw, ImageFont

from edgesim.evaluate import session
from real_models import RealModel, extract, flattened

PACKAGE = "rapidocr-onnxruntime==1.4.4"
MODEL = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
HEIGHT, WIDTH = 48, 320
INPUT_SHAPES = {"x": [1, 3, HEIGHT, WIDTH]}
WORDS = ("invoice total amount paid order shipping address street north river station "
         "Monday April Paris London Model Number Price Qty Date").split()


def line(rng: np.random.Generator) -> str:
    """A short text line: words, a number, sometimes punctuation."""
    words = [WORDS[i] for i in rng.integers(len(WORDS), size=int(rng.integers(1, 3)))]
    number = f"{rng.integers(1, 9999)}" + (f".{rng.integers(10, 99)}" if rng.random() < .5 else "")
    return " ".join(words + [number]) + (":" if rng.random() < .2 else "")


def render(text: str) -> np.ndarray:
    """[3, 48, 320] model input: text drawn at height 48, scaled into [-1, 1], zero padded."""
    font = ImageFont.load_default(size=30)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGB", (right - left + 12, HEIGHT), "white")
    ImageDraw.Draw(img).text((6 - left, (HEIGHT - (bottom - top)) // 2 - top), text,
                             fill="black", font=font)
    width = min(WIDTH, img.width)  # already at height 48; wider lines are squeezed
    x = np.asarray(img.resize((width, HEIGHT)), np.float32).transpose(2, 0, 1) / 255
    out = np.zeros((3, HEIGHT, WIDTH), np.float32)
    out[:, :, :width] = (x - 0.5) / 0.5
    return out


def dataset(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """`n` rendered lines [n, 3, 48, 320] and their texts."""
    rng = np.random.default_rng(seed)
    texts = [line(rng) for _ in range(n)]
    return np.stack([render(t) for t in texts]), texts


def ctc_decode(probs: np.ndarray, chars: list[str]) -> list[str]:
    """Greedy CTC: arg-max per step, repeats merged, blanks (index 0) dropped."""
    out = []
    for idx in probs.argmax(axis=2):
        keep = np.r_[True, idx[1:] != idx[:-1]] & (idx != 0)
        out.append("".join(chars[i] for i in idx[keep]))
    return out


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance by dynamic programming."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def char_accuracy(got: list[str], truth: list[str]) -> float:
    """1 - total edit distance / total characters of the truth."""
    return 1 - sum(edit_distance(g, t) for g, t in zip(got, truth)) / sum(map(len, truth))


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 32 calibration lines, `n_eval` evaluation lines."""
    path = extract(PACKAGE, MODEL, cache)
    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    chars = ["blank", *meta["character"].split("\n"), " "]
    x, truth = dataset(n_eval, seed=1)

    def run(p: Path) -> list[str]:
        sess = session(p)
        return [s for i in range(len(x))  # batch 1: edgesim's files compute batch 1
                for s in ctc_decode(sess.run(None, {"x": x[i:i + 1]})[0], chars)]

    return RealModel(name="PP-OCRv4 rec (text line 48x320, Conv + SVTR)", path=path,
                     ort_path=flattened(path, cache / "ppocr_rec_flat.onnx", INPUT_SHAPES),
                     calib={"x": dataset(32, seed=0)[0]},
                     metrics=("exact match with fp32", "char accuracy vs rendered text"),
                     run=run, score=lambda ref, got: {
                         "exact match with fp32": float(np.mean(np.array(ref) == np.array(got))),
                         "char accuracy vs rendered text": char_accuracy(got, truth)},
                     compile_kw={"input_shapes": INPUT_SHAPES})
