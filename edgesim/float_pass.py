"""The float model over a data set in onnxruntime: what the quantiser needs from it.

`float_pass` runs the float model emitted with the calibration tensors as extra outputs,
as onnxruntime's own `quantize_static` does, and collects the activation statistics, the
outputs, and for the range search the statistics of its fit part and the outputs of
its held-out part. `FloatPassRecorder` assembles the same from forward passes run for
another purpose (HAWQ's), and `onnxruntime_env` is the float model's tensors per batch,
which the range search and the own-layer check share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from compiler.emit import emit
from compiler.ir import Graph
from compiler.passes.calibrate import (
    CalibrationStats,
    Forward,
    RangeCollector,
    calibrate,
    calibration_tensors,
    gram_tensors,
)
from edgesim import calibration as cal
from edgesim.errors import UserError

E2E_SAMPLES = 16  # calibration samples on which the range assignments' output error is compared


@dataclass(frozen=True)
class FloatPass:
    """What one onnxruntime run of the float model over a data set gives."""

    stats: CalibrationStats | None  # activation statistics, if they were asked for
    outputs: np.ndarray  # the primary graph output (`primary_output`), samples stacked on axis 0
    # the statistics of the samples the range search fits ranges on (`fit_batches`), if
    # they were collected on the way (then `ranges.chosen_ranges` needs no pass of its own)
    fit_stats: CalibrationStats | None = None
    # the float graph outputs of each sample the range search holds out (`fit_batches`),
    # in order, if they were recorded on the way (its reference outputs then need no pass)
    held_outputs: tuple[dict[str, np.ndarray], ...] | None = None
    # the other float graph outputs, samples stacked along axis 0 (the fidelity check
    # scores every one: SwiftF0's first output, pitch, hides what its confidence shows)
    others: Mapping[str, np.ndarray] = field(default_factory=dict)


class FloatEnv(Protocol):
    """feeds (and optionally the tensor names wanted, default all) -> the float model's
    tensors on them, weights and inputs included (`onnxruntime_env`)."""

    def __call__(self, feeds: Mapping[str, np.ndarray], wanted: Iterable[str] | None = None
                 ) -> dict[str, np.ndarray]: ...


def _onnxruntime_forward(g: Graph, keep: Iterable[str],
                         outputs: list[dict[str, np.ndarray]]) -> Any:
    """`calibrate`'s forward: `g` emitted in float and run in onnxruntime, returning `keep`
    too; every batch's `scored_outputs` are appended to `outputs`."""
    from compiler.emit.builder import value_info
    from edgesim.evaluate import session

    # no onnx.checker pass (~0.3 s): onnxruntime validates the model as it loads it, and the
    # emitter's tests check the float rules
    model = emit(g, check=False)
    scored = scored_outputs(g)
    names = list(dict.fromkeys([*scored, *keep]))
    model.graph.output.extend(value_info(t, g.types[t]) for t in names if t not in g.outputs)
    sess = session(model, spin=False)

    def forward(feeds: Mapping[str, np.ndarray], _: tuple[str, ...]) -> dict[str, np.ndarray]:
        env = dict(zip(names, sess.run(names, dict(feeds))))
        outputs.append({t: env[t] for t in scored})
        return env
    return forward


def _float32_only(g: Graph) -> bool:
    """Whether every float tensor of `g` is float32 (onnxruntime then computes what the
    executor's float32 forward does, to float rounding)."""
    return all(np.dtype(t.dtype).kind != "f" or np.dtype(t.dtype) == np.float32
               for t in g.types.values())


def onnxruntime_env(g: Graph, keep: Iterable[str] | None = None, threads: int | None = 1
                    ) -> FloatEnv | None:
    """(feeds, names=None) -> the tensors of `g`'s float32 forward pass, run in onnxruntime
    (what `executor.run(g, feeds, dtype="float32", keep=keep or True)` gives, equal to float
    rounding, several times faster): `g` emitted in float with the kept layer outputs (default
    all) as graph outputs. With `names`, only those of the session's outputs are fetched
    (onnxruntime runs just the nodes they need, in the same optimised graph, so the values
    are the same bit for bit; PP-OCR's 363 tensors are 194 MiB a sample, the 105 the range
    search reads 43 MiB). None where that cannot stand in for the executor: a float tensor
    that is not float32, or a model onnxruntime does not load. `threads`: intra-op threads
    (None: onnxruntime's default, its idle threads parked)."""
    from compiler.emit.builder import value_info
    from compiler.errors import ModelError
    from edgesim.evaluate import session

    if not _float32_only(g):
        return None
    produced = ([t for layer in g.layers for t in layer.outputs if t] if keep is None
                else [t for t in keep if t not in g.weights and t not in g.inputs])
    try:
        model = emit(g, check=False)
        model.graph.output.extend(value_info(t, g.types[t]) for t in produced
                                  if t not in g.outputs)
        # one thread: the analysis interleaves these small runs with numpy backward passes,
        # which onnxruntime's spinning pool threads would slow down (magika, 16 samples, one
        # probe, interleaved: 1.7 s on one thread, 3.1-3.3 s on the default two, 1.9 s with
        # the executor's forward)
        sess = session(model, threads=threads, spin=threads is not None)
    except (ModelError, UserError):
        return None
    names = list(dict.fromkeys([*g.outputs, *produced]))
    weights = {t: np.asarray(w, np.float32) if w.dtype.kind == "f" else w
               for t, w in g.weights.items()}

    fetched = frozenset(names)

    def forward(feeds: Mapping[str, np.ndarray], wanted: Iterable[str] | None = None
                ) -> dict[str, np.ndarray]:
        env = {**weights, **{n: np.asarray(feeds[n]) for n in g.inputs}}
        asked = names if wanted is None else list(dict.fromkeys(
            t for t in wanted if t in fetched))
        env.update(zip(asked, sess.run(asked, {n: env[n] for n in g.inputs})))
        return env
    return forward


def float_pass(g: Graph, data: cal.CalibrationData, stats: bool,
               grams: bool = False) -> FloatPass:
    """Run the float model over `data` (batches of `g`'s own batch size) in onnxruntime once:
    activation statistics of `calibration_tensors(g)` if `stats` (with the X^T X of linear
    layer inputs if `grams`, for GPTQ), and the outputs (the primary one, `primary_output`,
    and every other scored float output in `others`).

    Raises:
        ModelError: if a calibration tensor holds NaN or infinity.
        UserError: if onnxruntime cannot load the emitted float model.
    """
    keep = calibration_tensors(g) if stats else ()
    gram_names = gram_tensors(g) if stats and grams else ()
    outputs: list[dict[str, np.ndarray]] = []
    fitting = fit_batches(g, data) if stats else None
    forward = _onnxruntime_forward(g, (*keep, *gram_names, *(
        float_outputs(g) if fitting is not None else ())), outputs)
    fit, held = RangeCollector(keep), HeldOutputs(g)
    if fitting is not None:
        forward = _fitting(forward, fitting, fit, held)
    collected = calibrate(g, cal.batches(g, data), tensors=keep, source=data.source,
                          forward=forward, grams=gram_names)
    first, *others = _stacked(outputs, scored_outputs(g))
    return FloatPass(collected if stats else None, first,
                     None if fitting is None else fit.result(),
                     None if fitting is None else held.result(),
                     dict(zip(scored_outputs(g)[1:], others)))


def primary_output(g: Graph) -> str:
    """The output the fidelity check's headline figures are on: the first that depends on an
    input (a constant output, folded into a weight by `fold_constants`, is trivially exact
    and would hide the real one); the first output where none does."""
    live = set(g.inputs)
    for layer in g.layers:  # topological order
        if live.intersection(layer.inputs):
            live.update(layer.outputs)
    return next((t for t in g.outputs if t in live), g.outputs[0])


def scored_outputs(g: Graph) -> tuple[str, ...]:
    """The outputs the fidelity check scores: the primary one (`primary_output`), then every
    other float output whose samples stack along axis 0 (its first dimension is the batch:
    not silero's state [2, batch, 128], which the check's chunks would stack along the
    wrong axis)."""
    size = cal.batch_size(g)
    return tuple(dict.fromkeys([primary_output(g), *(t for t in float_outputs(g)
                                                     if g.types[t].shape[:1] == (size,))]))


def _stacked(batches: list[dict[str, np.ndarray]], names: tuple[str, ...]) -> list[np.ndarray]:
    """Each of `names` over `batches`, concatenated along axis 0."""
    return [np.concatenate([b[t] for b in batches]) for t in names]


def float_outputs(g: Graph) -> tuple[str, ...]:
    """`g`'s float outputs: what the range search compares (`reference_case`)."""
    return tuple(t for t in g.outputs if np.dtype(g.types[t].dtype).kind == "f")


class HeldOutputs:
    """The float outputs of the samples a pass sees that the range search holds out."""

    def __init__(self, g: Graph) -> None:
        self._names = float_outputs(g)
        self._runs: list[dict[str, np.ndarray]] = []

    def add(self, env: Mapping[str, np.ndarray]) -> None:
        """Record one held-out sample's outputs from its tensors `env`."""
        self._runs.append({t: np.array(env[t]) for t in self._names})

    def result(self) -> tuple[dict[str, np.ndarray], ...]:
        """The recorded outputs, in sample order."""
        return tuple(self._runs)


def fit_batches(g: Graph, data: cal.CalibrationData) -> np.ndarray | None:
    """Per batch of `cal.batches(g, data)`, whether `ranges.chosen_ranges` fits ranges on it
    (its part of `cal.split`); None where those batches are not single samples of `data`
    or the data is not split."""
    if cal.batch_size(g) != 1 or data.count < 4:
        return None
    return ~cal.held_mask(data.count, E2E_SAMPLES)


def _fitting(forward: Forward, fitting: np.ndarray, fit: RangeCollector,
             held: HeldOutputs) -> Forward:
    """`forward` that also merges the batches `fitting` marks into `fit` (what a calibrate
    pass over the fit part alone collects: merges are exact and order-free) and records the
    other batches' outputs into `held`."""
    seen = iter(fitting)

    def run(feeds: Mapping[str, np.ndarray], names: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        env = forward(feeds, names)
        if next(seen):
            fit.add(env, 1)
        else:
            held.add(env)
        return env
    return run


class FloatPassRecorder:
    """A `float_pass` assembled from forward passes of the float model run for another
    purpose (compile's HAWQ probes run it over the calibration samples anyway): call it with
    each batch's tensors, in sample order, then take `result`. With `fit` (`fit_batches`
    of the data), the range search's fit part is collected too (`FloatPass.fit_stats`)."""

    def __init__(self, g: Graph, grams: bool = False, fit: np.ndarray | None = None) -> None:
        self._batch, self._scored = cal.batch_size(g), scored_outputs(g)
        self._ranges = RangeCollector(calibration_tensors(g), gram_tensors(g) if grams else ())
        self._outputs: list[dict[str, np.ndarray]] = []
        self._fit_mask = fit
        self._fit = RangeCollector(calibration_tensors(g))
        self._held = HeldOutputs(g)

    def __call__(self, env: Mapping[str, np.ndarray]) -> None:
        batch = None
        if self._fit_mask is not None and self._ranges.samples < len(self._fit_mask):
            if self._fit_mask[self._ranges.samples]:
                # both collectors take the same tensors: one histogram each (mobilenet_v2:
                # histograms were 1.3 of a 5 s compile)
                batch = self._ranges.batch_stats(env)
                self._fit.add(env, 1, batch)  # fit_batches: batches of one sample
            else:
                self._held.add(env)
        self._ranges.add(env, self._batch, batch)
        self._outputs.append({t: np.array(env[t], np.float32) for t in self._scored})

    def result(self, data: cal.CalibrationData) -> FloatPass | None:
        """What `float_pass(g, data, stats=True)` gives, if the recorded batches were all of
        `data`; None if they were not."""
        if self._ranges.samples != data.count:
            return None
        fitted = self._fit_mask is not None and len(self._fit_mask) == data.count
        first, *others = _stacked(self._outputs, self._scored)
        return FloatPass(self._ranges.result(data.source), first,
                         self._fit.result() if fitted else None,
                         self._held.result() if fitted else None,
                         dict(zip(self._scored[1:], others)))
