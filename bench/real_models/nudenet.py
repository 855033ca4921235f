"""NudeNet's detector (package `nudenet`, its `320n.onnx`: an Ultralytics YOLOv8n with 18
classes, opset 17, input [N, 3, H, W] dynamic (RGB / 255, the package runs it at 320 x 320),
output [N, 22, 2100]: centre-size boxes and per-class sigmoid scores of the three strides,
decoded in the graph (DFL Softmax, anchors); the package keeps a box above score 0.2 and
applies NMS at IoU 0.45).

The images are built here: crops of the two photographs scikit-learn ships (china.jpg,
flower.jpg) and cartoon faces drawn with Pillow. On them fp32 finds nothing in the photographs
and one box (class 17, BUTTOCKS_COVERED, scores 0.2-0.44) on some drawn faces (5 boxes in
the first 24 images): the model does not recognise them, so agreement with fp32 is the
measure, not accuracy, and with so few boxes near the threshold the F1 is coarse. Metrics:
F1 of the detections (score > 0.2, NMS 0.45) against fp32's at IoU 0.5, same class; cosine
of the class-score map with fp32's (the finer one)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgesim.evaluate import session
from real_models import RealModel, extract
from real_models.detection import BOX_AND_SCORE_METRICS, box_and_score, nms

PACKAGE = "nudenet==3.4.2"
MODEL = "nudenet/320n.onnx"
SIDE = 320
THRESHOLD = 0.2  # the package's score threshold


def drawn_face(rng: np.random.Generator) -> np.ndarray:
    """A cartoon face (oval, hair, eyes, nose, mouth) at a random place on a plain ground."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    cx, cy, r = (int(v) for v in (*rng.integers(100, 220, 2), rng.integers(50, 90)))
    tone = tuple(int(v) for v in np.array([224, 172, 105]) * rng.uniform(0.6, 1.1))
    d.ellipse([cx - r * 0.8, cy - r, cx + r * 0.8, cy + r], fill=tone)
    d.ellipse([cx - r * 0.85, cy - r * 1.1, cx + r * 0.85, cy - r * 0.4], fill=(40, 25, 10))
    for side in (-1, 1):
        ex, ey = cx + side * r * 0.35, cy - r * 0.2
        d.ellipse([ex - 8, ey - 5, ex + 8, ey + 5], fill="white")
        d.ellipse([ex - 4, ey - 4, ex + 4, ey + 4], fill="black")
    d.line([cx, cy - r * 0.1, cx - 5, cy + r * 0.25, cx + 3, cy + r * 0.25], fill=(120, 70, 50),
           width=3)
    d.arc([cx - r * 0.35, cy + r * 0.2, cx + r * 0.35, cy + r * 0.6], 20, 160, fill=(150, 40, 40),
          width=4)
    return np.asarray(im)


def images(n: int, seed: int) -> np.ndarray:
    """`n` images [n, 3, 320, 320]: three drawn faces, then a photo crop, and so on."""
    import sklearn
    from PIL import Image

    folder = Path(os.path.dirname(sklearn.__file__)) / "datasets" / "images"
    photos = [np.asarray(Image.open(folder / f).convert("RGB"))
              for f in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 4:
            out.append(drawn_face(rng))
            continue
        a = photos[(i // 4) % 2]
        side = int(rng.integers(160, 400))
        y, x = rng.integers(0, a.shape[0] - side), rng.integers(0, a.shape[1] - side)
        out.append(np.asarray(Image.fromarray(a[y:y + side, x:x + side]).resize((SIDE, SIDE))))
    return np.stack(out).astype(np.float32).transpose(0, 3, 1, 2) / 255.0


def outputs(path: Path, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Detections per image and the class-score map [N, 2100, 18]."""
    sess = session(path)
    raw = np.concatenate([sess.run(None, {"images": x[i:i + 8]})[0] for i in range(0, len(x), 8)])
    raw = raw.transpose(0, 2, 1)
    dets = []
    for o in raw:
        xy, wh, sc = o[:, :2], o[:, 2:4], o[:, 4:]
        dets.append(nms(np.c_[xy - wh / 2, xy + wh / 2], sc.max(1), sc.argmax(1), THRESHOLD))
    return dets, raw[:, :, 4:]


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 32 images calibrate, `n_eval` others evaluate."""
    x = images(n_eval, 1)
    return RealModel(
        name="NudeNet YOLOv8n 320 (photo crops, drawn faces)", path=extract(PACKAGE, MODEL, cache),
        calib={"images": images(32, 0)},
        metrics=BOX_AND_SCORE_METRICS, run=lambda p: outputs(p, x), score=box_and_score,
        compile_kw={"input_shapes": {"images": [1, 3, SIDE, SIDE]}})
