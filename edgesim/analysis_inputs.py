"""The data a compile's sensitivity analysis runs on: the calibration samples (a .npz, arrays or
random samples), the graph at the analysis batch size, and the analysis's first whole batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Graph
from edgesim import calibration as cal
from edgesim.errors import UserError

DEFAULT_CALIB_SAMPLES = 32
ANALYSIS_SAMPLES = 32  # calibration samples the sensitivity analysis uses
# Most samples per executor call in the analysis, per method. HAWQ probes one sample at a time:
# a Gauss-Newton probe's gradient sums its batch's samples, and their cross terms double its
# variance already at batch 2 (224x224 resnet50 needs 2 probes at batch 2 for a 5% relative
# standard error, 1 at batch 1: 19.3 s -> 10.8 s). LRP is deterministic and batches freely.
ANALYSIS_BATCH = {"hawq": 1, "lrp": 2}
ANALYSIS_MEMORY = 256e6  # bytes of float32 activations one analysis batch may keep


def calibration_data(g: Graph, calib: Any, calib_random: int | None,
                     name: str = "calibration data"
                     ) -> tuple[cal.CalibrationData, np.ndarray | None]:
    """Samples (and labels) from a .npz path, an in-memory mapping, or random samples."""
    if calib is not None and calib_random is not None:
        raise UserError("--calib", "give a calibration file or --calib-random, not both")
    if calib is None:
        n = DEFAULT_CALIB_SAMPLES if calib_random is None else calib_random  # 0 is refused
        return cal.random_samples(g, n), None
    if isinstance(calib, Mapping):
        arrays = dict(calib)
        labels = arrays.pop(cal.LABELS_KEY, None)
        return cal.from_arrays(g, arrays, name, labels)
    return cal.read_labelled(g, calib)


def calibration_inputs(g: Graph, calib: Any, calib_random: int | None
                       ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The analysis samples `compile` would use (for `edgesim.allocate`)."""
    data, labels = calibration_data(g, calib, calib_random)
    return analysis_inputs(data, labels, g)


def built_model(model: Any) -> Any:
    """`zoo:NAME` built into its ModelProto, anything else as given: the analysis lowers the
    model a second time (at its batch size), and building a zoo model costs ~0.4 s."""
    from edgesim.loading import ZOO_PREFIX, zoo_model

    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        return zoo_model(model[len(ZOO_PREFIX):])
    return model


def analysis_graph(model: Any, g: Graph, count: int, method: str,
                   input_shapes: Mapping[str, Sequence[int]] | None,
                   **load_options: Any) -> Graph:
    """`g` at `method`'s analysis batch size (one executor call per batch)."""
    from edgesim.loading import load_graph

    size = analysis_batch(g, count, method)
    if isinstance(model, Graph) or size <= 1 or input_shapes:
        return g
    try:
        return load_graph(model, {n: cal.batched_shape(g, n, size) for n in g.inputs},
                          **load_options)
    except ModelError:  # a Reshape with the batch size baked in: analyse at batch 1
        return g


def analysis_batch(g: Graph, count: int, method: str) -> int:
    """Samples per analysis batch: at most ANALYSIS_BATCH[method], and no more than keep
    ANALYSIS_MEMORY bytes of float32 activations (the reverse pass holds every tensor of its
    batch; 224x224 mobilenet_v2 has 53 MB per sample, resnet50 106 MB)."""
    per_sample = 4.0 * float(g.layer_table().a_out_elems.sum()) / max(1, cal.batch_size(g))
    return max(1, min(count, ANALYSIS_BATCH[method],
                      int(ANALYSIS_MEMORY // max(per_sample, 1.0))))


def analysis_inputs(data: cal.CalibrationData, labels: np.ndarray | None, ga: Graph
                    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The first whole analysis batches of the samples (at most ANALYSIS_SAMPLES)."""
    batch = cal.batch_size(ga)
    n = max(batch, min(data.count, ANALYSIS_SAMPLES) // batch * batch)
    return ({k: cal.model_layout(ga, k, v[:n]) for k, v in data.samples.items()},
            None if labels is None else labels[:n])
