"""Streams evaluated frame by frame with delta thresholds on MAC inputs, in onnxruntime.

`delta_model` emits the stateful graph of `compiler.passes.sparsify.delta_gates` (one state
input and output per gated layer); `run_stream` feeds it frame after frame, carrying the
states, and counts per gated layer how many input elements changed (the nonzero deltas a
delta-network accelerator multiplies; an unchanged element's MACs are skipped). onnxruntime
itself gains no speed: it still runs every MAC of every frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.ir import Graph
from compiler.passes.sparsify import delta_state
from edgesim.evaluate import session

Forward = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class StreamResult:
    """One stream's outputs per frame and the share of each gated input that changed.

    Attributes:
        outputs: [T, ...] the model's first output per frame.
        changed: per gated layer, the fraction of its input elements sent (nonzero deltas).
    """

    outputs: np.ndarray
    changed: Mapping[str, float]


def run_stream(g_delta: Graph, forward: Forward, frames: np.ndarray,
               layers: tuple[str, ...]) -> StreamResult:
    """Run `frames` [T, *input shape] through a delta-gated graph one frame at a time.

    Args:
        g_delta: the graph from `delta_gates` (its first input takes one frame).
        forward: runs the graph on a feed dict and returns at least its outputs by name
            (onnxruntime on the emitted model, or the reference executor).
        frames: the stream.
        layers: the gated MAC layers.
    """
    pairs = [delta_state(n) for n in layers]
    state = {s: np.zeros(g_delta.types[s].shape, g_delta.types[s].dtype) for s, _ in pairs}
    changed = dict.fromkeys(layers, 0)
    outputs = []
    for frame in frames:
        out = forward({g_delta.inputs[0]: frame, **state})
        for n, (s, sent) in zip(layers, pairs):
            changed[n] += int((out[sent] != state[s]).sum())
            state[s] = out[sent]
        outputs.append(out[g_delta.outputs[0]])
    sizes = {n: g_delta.types[s].size * len(frames) for n, (s, _) in zip(layers, pairs)}
    return StreamResult(np.stack(outputs), {n: c / sizes[n] for n, c in changed.items()})


def ort_forward(model: Any) -> Forward:
    """onnxruntime (CPU, one session) on an `onnx.ModelProto` or path, every output by name."""
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, dict(feeds))))
