"""Running a model over a data set several batches at a time, where it gives what
batch-by-batch runs give (`run_chunks`, `recorded_chunks`): the range search's held-out
samples and the fidelity check's samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler.ir import Graph
from edgesim import calibration as cal


def run_chunks(g: Graph, data: cal.CalibrationData, run: Callable[[Any], Any],
               chunk: int | None = None) -> list[tuple[dict[str, np.ndarray], Any]]:
    """(feeds, `run(feeds)`) over `data` in the batches of `_spans` (`chunk` samples a run,
    None: all in one) when the model runs them so: a symbolic batch dimension, and the
    first span's outputs (an array, or a dict of arrays) equal its two batches' runs alone;
    else at the graph's batch size."""
    per, spans = _spans(g, data, chunk)
    if len(spans) == len(per):
        return [(feeds, run(feeds)) for feeds in per]
    alone, groups = [run(per[0])], [_group(g, data, *span) for span in spans]
    singles = lambda: [*zip(per, alone), *((feeds, run(feeds)) for feeds in per[len(alone):])]  # noqa: E731
    try:
        probe = run(groups[0])
    except Exception:  # noqa: BLE001 -- onnxruntime's own error types: a fixed batch inside
        return singles()
    alone.append(run(per[1]))
    heads = alone[0].items() if isinstance(alone[0], dict) else [(None, alone[0])]
    if not all(batches_lead(np.asarray(probe if t is None else probe[t]), [
            np.asarray(y if t is None else y[t]) for y in alone], spans[0][1])
            for t, _ in heads):
        return singles()
    try:
        return [(groups[0], probe), *((feeds, run(feeds)) for feeds in groups[1:])]
    except Exception:  # noqa: BLE001 -- a larger batch than the probe's failed
        return [(groups[0], probe), *((feeds, run(feeds)) for feeds in per[spans[0][1]:])]


def _spans(g: Graph, data: cal.CalibrationData, chunk: int | None
           ) -> tuple[list[dict[str, np.ndarray]], list[tuple[int, int]]]:
    """`data`'s batches at the graph's batch size, and the (start, stop) batch spans run
    together: all in one (`chunk` None), or `chunk` samples a span, but the first span,
    which shows whether the model takes several batches at once, is two batches (one batch
    a span where `reduces_batch`). A model that does not fails late in its graph (PP-OCR's
    fixed Reshape follows its backbone): a failed 32-sample probe cost as much as 32 runs
    of one."""
    per, size = list(cal.batches(g, data)), cal.batch_size(g)
    n = len(per)
    step = 1 if reduces_batch(g) else min(n, n if chunk is None else max(1, chunk // size))
    if step < 2:
        return per, [(i, i + 1) for i in range(n)]
    if chunk is None:
        return per, [(0, n)]
    return per, [(0, 2), *((i, min(i + step, n)) for i in range(2, n, step))]


def reduces_batch(g: Graph) -> bool:
    """Whether a layer of `g` reduces over axis 0, where the chunks stack samples
    (openWakeWord's melspectrogram: a ReduceMax over every axis sets its log-mel floor):
    such a model is run batch by batch, whatever a probe of two batches shows (two samples
    of one loudness pass it). A reduce over axis 0 of a tensor without the batch there
    costs only the chunks' speed."""
    return any(layer.kind == "reduce" and 0 in tuple(layer.attrs.get("axes") or ())
               for layer in g.layers)


def _group(g: Graph, data: cal.CalibrationData, start: int, stop: int
           ) -> dict[str, np.ndarray]:
    """The feeds of batches `start` to `stop` (excluded) of `data`, in one batch."""
    size = cal.batch_size(g)
    return {n: cal.model_layout(g, n, x[start * size:stop * size])
            for n, x in data.samples.items()}


def recorded_chunks(g: Graph, data: cal.CalibrationData,
                    outputs: Sequence[dict[str, np.ndarray]], run: Callable[[Any], Any],
                    chunk: int | None = None) -> list[tuple[dict[str, np.ndarray], Any]]:
    """`run_chunks` with the outputs already known per batch (`outputs`, one dict per
    batch of `data`): a span's are its batches' outputs joined along axis 0, where the
    first span run by `run` shows that the model takes spans so; else per batch."""
    per, spans = _spans(g, data, chunk)
    singles = list(zip(per, outputs))
    if len(spans) == len(per):
        return singles
    joined = [{t: np.concatenate([o[t] for o in outputs[a:b]]) for t in outputs[0]}
              for a, b in spans]
    groups = [_group(g, data, *span) for span in spans]
    try:
        got = run(groups[0])
    except Exception:  # noqa: BLE001 -- onnxruntime's own error types: a fixed batch inside
        return singles
    if all(batches_lead(np.asarray(got[t]), [o[t] for o in outputs[:spans[0][1]]],
                        spans[0][1]) for t in outputs[0]):
        return list(zip(groups, joined))
    return singles


def batches_lead(whole: np.ndarray, parts: Sequence[np.ndarray], batches: int) -> bool:
    """Whether `whole` is `batches` batches along axis 0 and starts with the batches `parts`
    joined. Every part is compared, not only the first: a model that mixes samples
    (openWakeWord's melspectrogram clips its log-mel at the max over the whole batch - 80)
    may leave the loudest sample as it was and move only the floor of the others."""
    first = np.asarray(parts[0])
    if first.ndim == 0 or whole.shape != (first.shape[0] * batches, *first.shape[1:]):
        return False
    want = np.concatenate([np.asarray(p) for p in parts])
    head = whole[:len(want)]
    if first.dtype.kind != "f":
        return bool(np.array_equal(head, want))
    scale = float(np.max(np.abs(want), initial=0.0))
    return bool(np.allclose(head, want, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))
