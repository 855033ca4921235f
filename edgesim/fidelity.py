"""The compile's fidelity check: the emitted model, run in onnxruntime, against the float model
(`measure_fidelity`: the primary output and every other float output), the figure
`--min-fidelity` compares (`worst_score`), and the check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compiler.ir import Graph
from compiler.layer_error import CATASTROPHIC_SQNR_DB
from edgesim import calibration as cal
from edgesim.errors import UserError


def score_producer(g: Graph, out: str) -> str:
    """The kind of layer that makes `out`, for `evaluate.output_kind`: "softmax" also where
    the softmax is written out (exp / sum / div, `softmax_output.loss_tensor`), as trained
    classifiers exported from other frameworks often do."""
    from compiler.sensitivity.softmax_output import loss_tensor

    if loss_tensor(g, out).tensor != out:
        return "softmax"
    made = g.producers().get(out)
    return made.kind if made else ""


def measure_fidelity(g: Graph, model_path: Path, reference: np.ndarray,
                     data: cal.CalibrationData, labels: np.ndarray | None,
                     metric: Any = None, *,
                     others: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Emitted model (run in onnxruntime) against the float model's primary output
    (`float_pass.primary_output`: the first that depends on an input) `reference`
    over `data` (`float_pass`, or HAWQ's recorded forward passes), at the deployment batch
    size (several batches per run where the model allows: `emitted_outputs`), by the metrics
    that fit that output (`evaluate.output_kind`) or the user's
    `metric(reference, test) -> float`.

    `others`: the float model's other float outputs over `data` (`FloatPass.others`); each
    is scored by edgesim's own metrics under "other_outputs", and `collapse` and
    `check_fidelity` take the worst of all.
    """
    from edgesim.evaluate import accuracy, fidelity_metrics, output_kind, session
    from edgesim.float_pass import primary_output

    out = primary_output(g)
    names = [out, *(others or {})]
    sess = session(model_path, spin=False)
    got = emitted_outputs(g, data, lambda feeds: dict(zip(names, sess.run(names, dict(feeds)))))
    got_arr = got[out]
    n = len(reference)
    kind = output_kind(reference, score_producer(g, out), labels is not None)
    scored = fidelity_metrics(reference, got_arr, kind,
                              None if labels is None else labels[:n], metric)
    fp32_acc = (accuracy(reference.reshape(n, -1), labels[:n])
                if labels is not None and kind == "class_scores" else None)
    # data samples, not `n`: a sequence output stacks several rows per sample (PP-OCR: 40)
    fid = {"samples": data.count, "data": data.source, "output": out, **scored,
           "fp32_accuracy": fp32_acc}
    rest = {t: _scored(ref, got[t]) for t, ref in (others or {}).items()}
    fid = {**fid, **({"other_outputs": rest} if rest else {})}
    return {**fid, "collapsed": collapse(fid)}


def _scored(reference: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """One more float output's figures (edgesim's own metrics) and whether it collapsed."""
    from edgesim.evaluate import fidelity_metrics, output_kind

    scored = fidelity_metrics(reference, test, output_kind(reference, "", False))
    return {**scored, "collapsed": _collapse_one(scored)}


# Samples per onnxruntime run of the fidelity check (also bounds its memory). 32 samples of
# emitted files, CPU-s per 32 samples at 1/2/4/8/32 a run (one session, load ~10): PP-OCR rec
# W8 0.66/0.53-0.67/0.64-0.69/0.70-0.75/1.03-1.05 (larger runs leave the caches), resnet18 W8A8
# 0.86-0.92/0.83-0.88/0.79-0.83/0.82-0.85/0.85-0.88: 8 keeps the small-run gain, not the loss.
FIDELITY_CHUNK = 8


def emitted_outputs(g: Graph, data: cal.CalibrationData, run: Any) -> dict[str, np.ndarray]:
    """`run(feeds)` (outputs of the emitted model by name) over `data`, each concatenated
    along axis 0 as if run batch by batch at the graph's batch size, `FIDELITY_CHUNK` samples
    a run where the model takes them (`chunks.run_chunks`)."""
    from edgesim.chunks import run_chunks

    runs = [outs for _, outs in run_chunks(g, data, run, FIDELITY_CHUNK)]
    return {t: np.concatenate([np.asarray(outs[t]) for outs in runs]) for t in runs[0]}


def emitted_output(g: Graph, data: cal.CalibrationData, run: Any) -> np.ndarray:
    """`emitted_outputs` of a `run(feeds)` that gives one array."""
    return emitted_outputs(g, data, lambda feeds: {"": run(feeds)})[""]


# A plan whose emitted model agrees with fp32 on fewer than this share of samples' top-1 class
# has collapsed, whatever the flags: the report says so loudly.
COLLAPSED_AGREEMENT = 0.5
# The same for a tensor output whose error power exceeds a tenth of its own (the layer error
# check's "catastrophic", `compiler.layer_error`): cosine, the primary figure, reads about
# 0.95 there and hides it on an output far from zero mean. openWakeWord's melspectrogram
# (log-mel, mean 44, std 15) at uniform W8A8: cosine 0.898 but SQNR 6.0 dB, and the wake-word
# detections downstream agreed with fp32's on 0.66 of 32 spoken clips (its knee with random
# calibration: 0.933, 3.1 dB, 0.59); its knee with the clips' calibration, 18.3 dB: all 32.
COLLAPSED_SQNR_DB = CATASTROPHIC_SQNR_DB


def collapse(fidelity: Mapping[str, Any]) -> str | None:
    """Why the emitted model no longer follows fp32 (`measure_fidelity`'s figures), or None:
    top-1 or label agreement below `COLLAPSED_AGREEMENT`, or a tensor output's SQNR below
    `COLLAPSED_SQNR_DB`, whatever the primary metric, on the primary output or another."""
    why = _collapse_one(fidelity)
    others = fidelity.get("other_outputs", {})
    return why or next((f"output {t}: {o['collapsed']}" for t, o in others.items()
                        if o["collapsed"]), None)


def _collapse_one(fidelity: Mapping[str, Any]) -> str | None:
    """`collapse` for one output's figures."""
    name, value = fidelity_score(fidelity)
    if name in ("top-1 agreement", "label agreement") and value < COLLAPSED_AGREEMENT:
        return f"{name} with fp32 is {value:.3f}"
    sqnr = fidelity.get("sqnr_db")
    if fidelity.get("output_kind") == "tensor" and sqnr is not None and not (
            sqnr >= COLLAPSED_SQNR_DB):  # NaN collapses too
        return (f"the output's SQNR with fp32 is {sqnr:.1f} dB (< {COLLAPSED_SQNR_DB:g}: the "
                f"error has over a tenth of the output's power; cosine "
                f"{float(fidelity.get('cosine') or 0.0):.3f})")
    return None


def fidelity_score(fidelity: Mapping[str, Any]) -> tuple[str, float]:
    """One output's primary metric (`evaluate.fidelity_metrics`: top-1 agreement for class
    scores, label agreement for labels, cosine otherwise, or the user's metric)."""
    name = str(fidelity.get("metric", "cosine"))
    return name.replace("top1_agreement", "top-1 agreement").replace("_", " "), float(
        fidelity.get("value", fidelity.get("cosine")))


def worst_score(fidelity: Mapping[str, Any]) -> tuple[str, float]:
    """The figure --min-fidelity compares: the lowest primary metric over the scored outputs
    (the primary output's alone where it is the user's metric: its scale is the user's)."""
    first = fidelity_score(fidelity)
    if fidelity.get("metric") not in _OWN_METRICS:
        return first
    scores = [first, *((f"{name} of output {t}", value) for t, o in
                       fidelity.get("other_outputs", {}).items()
                       for name, value in [fidelity_score(o)])]
    return min(scores, key=lambda s: s[1] if s[1] == s[1] else -math.inf)  # NaN is worst


_OWN_METRICS = ("cosine", "top1_agreement", "label_agreement")


def check_minimum(minimum: float | None, custom_metric: bool) -> None:
    """Raise `UserError` before any work when no emitted model can meet `minimum`: NaN, or
    above 1 while the score is one of edgesim's own (agreements and cosine are <= 1; a
    user's metric may have any range)."""
    if minimum is None:
        return
    if math.isnan(minimum) or (minimum > 1 and not custom_metric):
        raise UserError("--min-fidelity", f"expected a number <= 1 (top-1 or label agreement, "
                        f"or cosine with fp32, e.g. 0.9), got {minimum}")


def check_fidelity(fidelity: Mapping[str, Any], minimum: float | None) -> None:
    """Raise `UserError` when `fidelity`'s worst primary figure over its scored outputs
    (`worst_score`) is below `minimum` (None: no check)."""
    if minimum is None:
        return
    name, value = worst_score(fidelity)
    if not value >= minimum:  # NaN fails too
        raise UserError("--min-fidelity", f"the emitted model's {name} with fp32 is "
                        f"{value:.4f} < {minimum}; nothing written (try more bits: a larger "
                        "--budget or --weight-bits without the smallest widths)")
