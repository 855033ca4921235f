"""Batch check: does an emitted file with a dynamic batch run each sample as batch 1 would?

The emitter follows the batch through shapes (`compiler.emit.batch`); a reshape that folds the
batch into an axis a later layer reduces or normalises keeps every shape consistent but
computes across samples. Only running the file shows it. onnxruntime is imported on use: the
weight-only 4-bit path reaches `per_sample_batch` but never runs a file here
(tests/edgesim/test_quantize_w4_path.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import onnx

from compiler.emit.builder import EmitOptions
from compiler.ir import Graph

# A batch-2 output further than this share from its samples' batch-1 outputs, measured
# against both their distance and their size, mixed the samples. Batching alone moves
# outputs less: magika's W8A8 file (activations quantised per run over the whole batch)
# moves 1-3 % of the output's size at batch 2, and 2-14 % of the two samples' distance when
# random bytes give it near-equal outputs; the mixing softmax of tests/edgesim/
# test_batch_check.py moves 60-80 % of the size, 49-70 % of the distance.
MIXED_SHARE = 0.1


def per_sample_batch(g: Graph, model: onnx.ModelProto, options: EmitOptions
                     ) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """`model` (emitted from `g` with `options`), or, if it declares a dynamic batch that
    mixes samples, `g` emitted again at the batch it was lowered at, with a note saying why.

    The emitter follows the batch through shapes (`compiler.emit.batch`); a reshape that folds
    the batch into an axis a later layer reduces or normalises (a softmax over it) keeps every
    shape consistent but computes across samples. Only running the file shows it: two random
    samples stacked at batch 2 against each at batch 1 (`batch_mixes_samples`), when some
    tensor holds the batch merged with other data (only such a layout can mix them; the
    run costs up to 1.3 CPU-s, mrz_seg's).
    """
    why = batch_mixes_samples(model) if _batch_merged(g) else ""
    if not why:
        return model, ()
    from compiler.emit import emit

    fixed = emit(g, dataclasses.replace(options, fixed_batch=f"a run at batch 2 {why}"))
    return fixed, (f"the emitted model declares the batch it was lowered at, not a dynamic "
                   f"one: at batch 2 {why}",)


def _batch_merged(g: Graph) -> bool:
    """Whether the emitted batch sits, in some tensor, on an axis that also holds other
    data (a reshape folded it into a larger axis, `compiler.emit.batch.reshape_axes`)."""
    from compiler.emit.batch import flow

    found = flow(g)
    sizes = {g.types[t].shape[k] for t, k in found.axes.items() if t in g.types}
    return found.dynamic and len(sizes) > 1


def batch_mixes_samples(model: onnx.ModelProto, seed: int = 0) -> str:
    """How `model` at batch 2 differs from its two samples at batch 1 ("" if it does not, or
    declares no dynamic batch). The batch is each input's and output's one symbolic dim."""
    inputs, outputs = _batch_axes(model.graph.input), _batch_axes(model.graph.output)
    if not inputs or not outputs:
        return ""
    from edgesim.evaluate import session  # onnxruntime loads here, on use

    sess = session(model.SerializeToString(), log_level=3)
    rng = np.random.default_rng(seed)
    a, b = (_sample(model, rng) for _ in range(2))
    both = {t: np.concatenate([a[t], b[t]], axis=k) if k is not None else a[t]
            for t, k in ((t, inputs.get(t)) for t in a)}
    names = [o.name for o in model.graph.output]
    runs = [dict(zip(names, sess.run(None, feed), strict=True)) for feed in (a, b, both)]
    for name, k in outputs.items():
        ya, yb = (np.asarray(r[name], np.float64) for r in runs[:2])
        y2a, y2b = np.split(np.asarray(runs[2][name], np.float64), [ya.shape[k]], axis=k)
        off = float(max(np.linalg.norm(y2a - ya), np.linalg.norm(y2b - yb)))
        apart = float(np.linalg.norm(ya - yb))
        size = float(np.linalg.norm(ya) + np.linalg.norm(yb)) / 2
        if off > MIXED_SHARE * max(apart, size):
            return (f"output {name} is not its samples' batch-1 outputs (off by "
                    f"{off / max(apart, 1e-30):.2g} of their distance)")
    return ""


def _batch_axes(values: Sequence[onnx.ValueInfoProto]) -> dict[str, int]:
    """Tensor -> its one symbolic dim (tensors with none, or several, are left out)."""
    out = {}
    for v in values:
        dims = v.type.tensor_type.shape.dim
        symbolic = [k for k, d in enumerate(dims) if d.dim_param or not d.HasField("dim_value")]
        if len(symbolic) == 1:
            out[v.name] = symbolic[0]
    return out


def _sample(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One random sample per input at batch 1: normal floats, 0/1 integers (valid indices
    and ids), random booleans."""
    feed = {}
    for v in model.graph.input:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        feed[v.name] = (rng.standard_normal(shape) if dtype.kind == "f" else
                        rng.random(shape) < 0.5 if dtype.kind == "b" else
                        rng.integers(0, 2, shape)).astype(dtype)
    return feed
