"""ddddocr's character detector (package `ddddocr`, its `common_det.onnx`: a YOLOX-nano-sized
detector for click captchas, opset 11, input [1, 3, 416, 416] BGR 0-255 letterboxed on grey
114, output [1, 3549, 6]: per anchor point of strides 8/16/32 the box offsets (log-size), the
objectness and one class score, both sigmoid; the package decodes the grid, keeps
objectness x class > 0.1 and applies NMS at IoU 0.45).

The captchas are drawn here with Pillow: 3-6 large characters of the DejaVu fonts, rotated,
in random colours, on crops of the photographs scikit-learn ships, with a few noise lines.
Metrics: F1 of the detections against fp32's at IoU 0.5, and their recall of the drawn
characters (a detection within IoU 0.5 of a character's drawn box)."""

from __future__ import annotations

import glob
import os
import string
from pathlib import Path

import numpy as np

from edgesim.evaluate import session
from real_models import RealModel, extract
from real_models.detection import f1, iou, nms

PACKAGE = "ddddocr==1.6.1"
MODEL = "ddddocr/common_det.onnx"
SIDE = 416
STRIDES = (8, 16, 32)
THRESHOLD = 0.1  # the package's score threshold


def captchas(n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """`n` captchas [n, 3, 416, 416] (BGR, 0-255) and each one's character boxes [K, 4]."""
    import sklearn
    from PIL import Image, ImageDraw, ImageFont

    folder = Path(os.path.dirname(sklearn.__file__)) / "datasets" / "images"
    photos = [Image.open(folder / f).convert("RGB") for f in ("china.jpg", "flower.jpg")]
    fonts = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/*Bold*.ttf"))
    rng = np.random.default_rng(seed)
    xs, boxes = [], []
    for i in range(n):
        photo = photos[i % 2]
        x0, y0 = int(rng.integers(0, photo.width - SIDE)), int(rng.integers(0, photo.height - SIDE))
        im = photo.crop((x0, y0, x0 + SIDE, y0 + SIDE))
        k = int(rng.integers(3, 7))
        cells = rng.permutation(16)[:k]  # one character per cell of a 4 x 4 grid: no overlaps
        own = []
        for c in cells:
            size = int(rng.integers(40, 72))
            font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], size)
            glyph = Image.new("L", (2 * size, 2 * size))
            ImageDraw.Draw(glyph).text((size // 2, size // 3), str(rng.choice(
                list(string.ascii_uppercase + string.digits))), fill=255, font=font)
            glyph = glyph.rotate(float(rng.uniform(-35, 35)), expand=False)
            bx = glyph.getbbox() or (0, 0, 1, 1)
            glyph = glyph.crop(bx)
            gx = int(c % 4 * 104 + rng.integers(0, max(1, 104 - glyph.width)))
            gy = int(c // 4 * 104 + rng.integers(0, max(1, 104 - glyph.height)))
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            im.paste(Image.new("RGB", glyph.size, colour), (gx, gy), glyph)
            own.append([gx, gy, gx + glyph.width, gy + glyph.height])
        d = ImageDraw.Draw(im)
        for _ in range(3):
            d.line([tuple(int(v) for v in rng.integers(0, SIDE, 2)) for _ in range(2)],
                   fill=tuple(int(v) for v in rng.integers(0, 255, 3)), width=2)
        xs.append(np.asarray(im, np.float32)[:, :, ::-1].transpose(2, 0, 1))
        boxes.append(np.array(own, np.float64))
    return np.stack(xs), boxes


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Each anchor point's grid cell and stride, in the model's output order."""
    cells, strides = [], []
    for s in STRIDES:
        yy, xx = np.mgrid[:SIDE // s, :SIDE // s]
        cells.append(np.c_[xx.ravel(), yy.ravel()])
        strides.append(np.full(cells[-1].shape[0], s))
    return np.concatenate(cells), np.concatenate(strides)[:, None]


def outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Detections per image, decoded as the package does."""
    sess = session(path)
    cells, strides = _grid()
    dets = []
    for i in range(len(x)):
        o = sess.run(None, {"images": x[i:i + 1]})[0][0].astype(np.float64)
        xy, wh = (o[:, :2] + cells) * strides, np.exp(o[:, 2:4]) * strides
        dets.append(nms(np.c_[xy - wh / 2, xy + wh / 2], o[:, 4] * o[:, 5],
                        np.zeros(len(o)), THRESHOLD))
    return dets


def recall(dets: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """The fraction of drawn characters that a detection covers with IoU >= 0.5."""
    hit = sum(int(len(d) > 0 and iou(t, d[:, :4]).max() >= 0.5) for d, ts in zip(dets, truth)
              for t in ts)
    return hit / sum(len(ts) for ts in truth)


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 32 captchas calibrate, `n_eval` others evaluate."""
    x, truth = captchas(n_eval, 1)
    return RealModel(
        name="ddddocr YOLOX character detector (drawn captchas)",
        path=extract(PACKAGE, MODEL, cache), calib={"images": captchas(32, 0)[0]},
        metrics=("detection F1 vs fp32", "recall of drawn characters"),
        run=lambda p: outputs(p, x),
        score=lambda ref, got: {"detection F1 vs fp32": f1(ref, got),
                                "recall of drawn characters": recall(got, truth)})
