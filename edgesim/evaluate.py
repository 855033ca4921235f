"""Running emitted models in onnxruntime and scoring them against a reference.

This is the only module of the package that imports onnxruntime. It runs a model (a path or
a `ModelProto`) on the CPU provider, times it, and compares outputs: top-1 agreement,
accuracy against labels, cosine similarity and SQNR.

Which comparison fits depends on the output (`output_kind`): top-1 agreement only for class
scores, exact agreement for integer labels, cosine and SQNR for every other tensor (an
embedding, a probability, a sequence, a map). A user metric replaces the primary one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from edgesim.errors import UserError

Model = str | os.PathLike | Any  # a path or an onnx.ModelProto


def session(model: Model | bytes, threads: int | None = None, spin: bool = True,
            log_level: int = 4) -> ort.InferenceSession:
    """An onnxruntime CPU session with full graph optimisation and `threads` intra-op threads
    (None or 0: onnxruntime's default), from a path, a `ModelProto` or its serialised bytes.

    `log_level` is onnxruntime's log severity (4: fatal only, since run errors come back as
    exceptions and ERROR-level logs would repeat them). `spin=False` parks idle pool threads
    instead of busy-waiting between parallel regions: the compile's many short runs on a
    shared 2-core machine (int8 resnet18, batch 2, load ~7, interleaved: 285-593 ms without
    spinning, 532-760 ms with); outputs are unchanged.

    Raises:
        UserError: if onnxruntime cannot load the model (its message, one line).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = log_level
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # the handed-over buffers stay referenced until the session is made (onnxruntime copies
    # them then; `opts` holds only their addresses)
    data, buffers = (model, []) if isinstance(model, str | os.PathLike | bytes) else \
        _handed_over(model, opts)
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        where = str(model) if isinstance(model, str | os.PathLike) else "model"
        raise UserError(where, f"onnxruntime cannot load it: {str(e).splitlines()[0]}") from None


HANDED_BYTES = 1 << 16  # initializers at least this large skip the protobuf round trip


def _handed_over(model: Any, opts: ort.SessionOptions) -> tuple[bytes, list[bytes]]:
    """`model`'s bytes for onnxruntime, its large raw initializers left out and handed to
    `opts` as in-memory external files instead (one a tensor, named by its index), so that
    they are neither serialised into the protobuf nor parsed out of it again: resnet18's
    float model, 47 MB, 29-46 ms of CPU to a session against 77-105 ms serialised, the same
    outputs bit for bit. Also the buffers, which must outlive the session's creation.
    `model` itself is not changed."""
    if not hasattr(opts, "add_external_initializers_from_files_in_memory"):  # older versions
        return model.SerializeToString(), []
    light, graph = _without(model, "graph"), _without(model.graph, "initializer")
    names: list[str] = []
    buffers: list[bytes] = []
    for init in model.graph.initializer:
        external = type(init).EXTERNAL
        if init.data_location == external or init.ByteSize() < HANDED_BYTES or \
                not init.HasField("raw_data"):
            graph.initializer.append(init)
            continue
        buffers.append(init.raw_data)
        names.append(str(len(names)))
        stub = _without(init, "raw_data")
        stub.data_location = external
        for key, value in (("location", names[-1]), ("offset", "0"),
                           ("length", str(len(buffers[-1])))):
            entry = stub.external_data.add()
            entry.key, entry.value = key, value
        graph.initializer.append(stub)
    if not names:
        return model.SerializeToString(), []
    light.graph.CopyFrom(graph)
    opts.add_external_initializers_from_files_in_memory(names, buffers,
                                                        [len(b) for b in buffers])
    return light.SerializeToString(), buffers


def _without(message: Any, field: str) -> Any:
    """A copy of a protobuf `message` without `field` (which is not copied at all)."""
    out = type(message)()
    for desc, value in message.ListFields():
        if desc.name == field:
            continue
        if (desc.is_repeated if hasattr(desc, "is_repeated")
                else desc.label == desc.LABEL_REPEATED):
            getattr(out, desc.name).extend(value)
        elif desc.type == desc.TYPE_MESSAGE:
            getattr(out, desc.name).CopyFrom(value)
        else:
            setattr(out, desc.name, value)
    return out


def run_onnx(model: Model, feeds: Mapping[str, np.ndarray],
             threads: int | None = None) -> dict[str, np.ndarray]:
    """Run a model once in onnxruntime; outputs by name."""
    return run_batches(model, [feeds], threads)[0]


def run_batches(model: Model, batches: Iterable[Mapping[str, np.ndarray]],
                threads: int | None = None) -> list[dict[str, np.ndarray]]:
    """Run a model on each feed dict with one onnxruntime session; outputs by name."""
    sess = session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, dict(feeds)))) for feeds in batches]


def _static_batch(sess: ort.InferenceSession) -> int | None:
    first = sess.get_inputs()[0].shape
    return first[0] if first and isinstance(first[0], int) else None


def check_samples(sess: ort.InferenceSession, samples: Mapping[str, np.ndarray],
                  where: str = "--data") -> None:
    """Refuse (`UserError`, one line) samples that are not the session's inputs: other keys,
    another rank, a fixed dimension (after the sample axis) that differs, or fewer samples
    than a static batch; onnxruntime's own errors were reported as internal ones."""
    declared = {i.name: i.shape for i in sess.get_inputs()}
    missing, unknown = sorted(set(declared) - set(samples)), sorted(set(samples) - set(declared))
    if missing or unknown:
        raise UserError(where, f"keys must be the model inputs {sorted(declared)}: missing "
                        f"{missing}, unknown {unknown}")
    for name, dims in declared.items():
        got = np.shape(samples[name])
        if not dims:  # a rank-0 input (SwiftF0's fmin): one value for every sample
            if got:
                raise UserError(where, f"{name}: shape {list(got)}, the model takes one value")
            continue
        if len(got) != len(dims) or any(isinstance(d, int) and d != n
                                        for d, n in zip(dims[1:], got[1:])):
            raise UserError(where, f"{name}: shape {list(got)}, the model takes "
                            f"{['samples', *dims[1:]]}")
        if isinstance(dims[0], int) and got[0] < dims[0]:
            raise UserError(where, f"{name}: {got[0]} samples, fewer than the model's static "
                            f"batch of {dims[0]}")


def evaluate_model(model: Model, samples: Mapping[str, np.ndarray],
                   labels: np.ndarray | None = None, threads: int | None = None,
                   runs: int = 30) -> dict[str, Any]:
    """Accuracy (with labels) and measured latency of `model` on this machine.

    `samples` hold inputs along axis 0; a model with a static batch size runs them in chunks
    of that size. Latency is timed on the first chunk: median and p90 of `runs` runs.
    """
    sess = session(model, threads)
    check_samples(sess, samples)
    count = next((len(v) for v in samples.values() if np.ndim(v)), 1)
    size = _static_batch(sess) or count
    chunks = [{k: v[i:i + size] if np.ndim(v) else v for k, v in samples.items()}
              for i in range(0, count - size + 1, size)]
    outputs = run_batches(model, chunks, threads)
    first = sess.get_outputs()[0].name
    logits = np.concatenate([o[first] for o in outputs])
    lat = measure_latency(model, chunks[0], threads, runs)
    out: dict[str, Any] = {"samples": len(logits), "batch": size, "threads": threads,
                           "latency_median_ms": lat.median_ms, "latency_p90_ms": lat.p90_ms}
    if labels is not None:
        out["accuracy"] = accuracy(logits.reshape(len(logits), -1), labels[:len(logits)])
    return out


@dataclass(frozen=True)
class Latency:
    """Wall-clock latency of repeated runs, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    threads: int | None


def measure_latency(model: Model, feeds: Mapping[str, np.ndarray], threads: int | None = None,
                    runs: int = 30, warmup: int = 3) -> Latency:
    """Median (and p10/p90) latency of `runs` runs after `warmup` untimed ones."""
    sess = session(model, threads)
    feeds = dict(feeds)
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    p10, med, p90 = np.percentile(times, [10, 50, 90])
    return Latency(float(med), float(p10), float(p90), runs, threads)


# ----------------------------------------------------------------------------------------------
# Agreement metrics


def _rows(x: np.ndarray) -> np.ndarray:
    """Samples as rows: [N, rest] (a 1-D array is one sample), in the array's own dtype."""
    x = np.asarray(x)
    return x.reshape(1, -1) if x.ndim < 2 else x.reshape(x.shape[0], -1)


# elements of each operand converted to float64 at a time: whole-array float64 copies of
# PP-OCR's 32 x 40 x 6625 output (8.5 M values) were five fresh 68 MB arrays per fidelity
# check, 0.3 CPU-s of page faults (their arithmetic: ~0.07 s)
METRIC_BLOCK_ELEMS = 1 << 16


@dataclass(frozen=True)
class _Sums:
    """The float64 sums cosine and SQNR are made of, per sample (row) where they need it."""

    dot: np.ndarray    # [N] <ref, test>
    ref2: np.ndarray   # [N] |ref|^2
    test2: np.ndarray  # [N] |test|^2
    err2: float        # |test - ref|^2 over everything


def _sums(reference: np.ndarray, test: np.ndarray) -> _Sums:
    """`_Sums` of two arrays of one shape, in float64, a block of whole rows at a time."""
    ra, rb = _rows(reference), _rows(test)
    if ra.shape != rb.shape:
        raise ValueError(f"shapes differ: {np.shape(reference)} and {np.shape(test)}")
    step = max(1, METRIC_BLOCK_ELEMS // max(1, ra.shape[1]))
    parts, err2 = [], 0.0
    for i in range(0, len(ra), step):
        a, b = ra[i:i + step].astype(np.float64), rb[i:i + step].astype(np.float64)
        parts.append((np.einsum("ij,ij->i", a, b), np.einsum("ij,ij->i", a, a),
                      np.einsum("ij,ij->i", b, b)))
        e = b - a
        err2 += float(np.einsum("ij,ij->", e, e))
    if not parts:  # no samples
        return _Sums(np.zeros(0), np.zeros(0), np.zeros(0), err2)
    dot, ref2, test2 = (np.concatenate(p) for p in zip(*parts))
    return _Sums(dot, ref2, test2, err2)


def _cosine(s: _Sums) -> float:
    den = np.sqrt(s.ref2) * np.sqrt(s.test2)
    # zero rows agree (1.0); a row holding NaN has no cosine: NaN, which fails --min-fidelity
    # (SwiftF0 at uniform W4 put NaN in 79 % of its frames and read cosine 0.983)
    empty = np.where(np.isnan(den), np.nan, 1.0)
    return float(np.mean(np.where(den > 0, s.dot / np.where(den > 0, den, 1.0), empty)))


def _sqnr_db(s: _Sums) -> float:
    return float("inf") if s.err2 == 0 else float(10 * np.log10(s.ref2.sum() / s.err2))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples (first axis) of the cosine similarity of `a` and `b`."""
    return _cosine(_sums(a, b))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB: 10 log10(|ref|^2 / |ref - test|^2)."""
    return _sqnr_db(_sums(reference, test))


def top1_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Fraction of samples whose arg-max over the last axis agrees."""
    return float(np.mean(np.argmax(reference, -1) == np.argmax(test, -1)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of `logits` [N, C] against integer `labels` [N]."""
    if len(logits) != len(labels):
        raise UserError("labels", f"{len(labels)} labels for {len(logits)} samples")
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


@dataclass(frozen=True)
class Agreement:
    """How closely one output follows a reference output."""

    cosine: float
    sqnr_db: float
    top1_agreement: float
    max_abs_diff: float
    accuracy: float | None = None


def agreement(reference: np.ndarray, test: np.ndarray,
              labels: Sequence[int] | np.ndarray | None = None) -> Agreement:
    """All agreement metrics of `test` against `reference` (and labels, if given)."""
    diff = float(np.max(np.abs(np.asarray(test, np.float64) - reference)))
    acc = None if labels is None else accuracy(test, np.asarray(labels))
    return Agreement(cosine(reference, test), sqnr_db(reference, test),
                     top1_agreement(reference, test), diff, acc)


# ----------------------------------------------------------------------------------------------
# Metrics that fit the output

Metric = Callable[[np.ndarray, np.ndarray], float]  # (reference, test) -> score
CLASS_SCORE_PRODUCERS = frozenset({"softmax", "linear", "matmul"})


def output_kind(reference: np.ndarray, producer: str = "", labelled: bool = False) -> str:
    """"labels" (an integer output), "class_scores" ([N, C>1] float from a softmax or a
    classifier head, or any [N, C>1] output given class labels) or "tensor" (the rest)."""
    ref = np.asarray(reference)
    if ref.dtype.kind in "iub":
        return "labels"
    scores = ref.ndim == 2 and ref.shape[1] > 1
    return "class_scores" if scores and (labelled or producer in CLASS_SCORE_PRODUCERS) \
        else "tensor"


def label_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Fraction of samples whose every element equals the reference's."""
    ref, got = np.asarray(reference), np.asarray(test)
    return float(np.mean(np.all(ref.reshape(len(ref), -1) == got.reshape(len(got), -1), 1)))


def fidelity_metrics(reference: np.ndarray, test: np.ndarray, kind: str,
                     labels: np.ndarray | None = None,
                     metric: Metric | None = None) -> dict[str, Any]:
    """The metrics that fit an output of `kind` (others None) and the primary one.

    Returns:
        {"output_kind", "metric" (name), "value", "cosine", "sqnr_db", "top1_agreement",
        "label_agreement", "accuracy"}.
    """
    out: dict[str, Any] = dict.fromkeys(("cosine", "sqnr_db", "top1_agreement",
                                         "label_agreement", "accuracy"))
    if kind == "labels":
        out["label_agreement"] = primary = label_agreement(reference, test)
        name = "label_agreement"
    else:
        sums = _sums(reference, test)  # one float64 pass for both
        out["cosine"], out["sqnr_db"] = _cosine(sums), _sqnr_db(sums)
        name, primary = "cosine", out["cosine"]
        if kind == "class_scores":
            out["top1_agreement"] = primary = top1_agreement(_rows(reference), _rows(test))
            name = "top1_agreement"
            if labels is not None:
                out["accuracy"] = accuracy(_rows(test), np.asarray(labels))
    if metric is not None:
        name, primary = getattr(metric, "__name__", "user metric"), float(metric(reference, test))
    return {"output_kind": kind, "metric": name, "value": primary, **out}
