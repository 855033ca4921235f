"""The compile's SmoothQuant step: the migration strength (`smooth_alpha`), the per-channel
activation maxima at its sites (`outlier_channels`) and the smoothed graph (`smoothed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.ir import Graph
from edgesim import calibration as cal
from edgesim.analysis_inputs import ANALYSIS_SAMPLES
from edgesim.errors import UserError

if TYPE_CHECKING:
    from edgesim.compile_options import CompileOptions

AUTO_ALPHA = 0.5  # SmoothQuant's default strength (Xiao et al. 2023, sec. 4)


def smooth_alpha(target: Any, options: CompileOptions) -> float | None:
    """The migration strength this compile uses (None: no SmoothQuant). "auto" migrates only
    where per-tensor static activations may be chosen (8-bit activations on some layer):
    weight-only plans quantise no activation per tensor, and migration only widens weights."""
    alpha = options.smooth_quant
    if alpha == "auto":
        from edgesim.alloc_problem import candidate_bits

        choices = candidate_bits(target, options.weight_bits, options.act_bits)
        return AUTO_ALPHA if bool((choices[:, 1] == 8).any()) else None
    if alpha is None or isinstance(alpha, str):
        if alpha not in (None, "off"):
            raise UserError("--smooth-quant", f"expected a number, auto or off, got {alpha!r}")
        return None
    if not 0.0 <= alpha <= 1.0:
        raise UserError("--smooth-quant", f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


def outlier_channels(g: Graph, data: cal.CalibrationData, target: Any,
                     options: CompileOptions) -> dict[str, np.ndarray]:
    """Per-channel max|x| at SmoothQuant's sites over (at most ANALYSIS_SAMPLES of) the
    calibration samples (with "auto", only the sites with outlier channels); empty when
    SmoothQuant is off or the model has no site."""
    import itertools

    from compiler.passes.smooth_quant import channel_absmax, outlier_sites, sites

    if smooth_alpha(target, options) is None or not sites(g):
        return {}
    from edgesim.float_pass import onnxruntime_env

    limit = max(1, ANALYSIS_SAMPLES // cal.batch_size(g))
    outs = [g.layer(name).outputs[0] for name in sites(g)]
    absmax = channel_absmax(g, itertools.islice(cal.batches(g, data), limit),
                            onnxruntime_env(g, outs))  # onnxruntime: ~10x the executor
    return outlier_sites(absmax) if options.smooth_quant == "auto" else absmax


def smoothed(g: Graph, absmax: Mapping[str, np.ndarray], alpha: float | None) -> Graph:
    """`g` with SmoothQuant's migration (strength `alpha`) at the sites of `absmax`, noted;
    `g` itself when there is none."""
    from compiler.passes.smooth_quant import smooth

    if not absmax or alpha is None:
        return g
    note = f"SmoothQuant (alpha {alpha}) at {len(absmax)} norm layers"
    return replace(smooth(g, absmax, alpha), notes=g.notes + (note,))
