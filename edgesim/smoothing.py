"""The compile's SmoothQuant step: the migration strength (`smooth_alpha`), the per-channel
activation maxima at its sites (`outlier_channels`) and the smoothed graph (`smoothed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.ir import Graph
from edgesim import calibration as cal
from edgesim.analysis_inputs import ANALYSIS_SAMPLES
from edgesim.errors import UserError

if TYPE_CHECKING:
    from edgesim.float_pass import FloatEnv
    from edgesim.pipeline import CompileOptions

AUTO_ALPHA = 0.5  # SmoothQuant's default strength (Xiao et al. 2023, sec. 4)
# relative margin below OUTLIER_RATIO under which a shared session's "no site" stands: its
# values differ from the site-only session's by float rounding (~1e-6 relative), far less
ROUNDING_MARGIN = 1e-3


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
                     options: CompileOptions, shared: FloatEnv | None = None
                     ) -> dict[str, np.ndarray]:
    """Per-channel max|x| at SmoothQuant's sites over (at most ANALYSIS_SAMPLES of) the
    calibration samples (with "auto", only the sites with outlier channels); empty when
    SmoothQuant is off or the model has no site. `shared`: `onnxruntime_env(g)` built for
    another phase (HAWQ's forward passes); with "auto" it settles the case where no site
    qualifies, without a session of the pass's own."""
    import itertools

    from compiler.passes.smooth_quant import channel_absmax, outlier_sites, sites

    if smooth_alpha(target, options) is None or not sites(g):
        return {}
    from edgesim.float_pass import onnxruntime_env

    limit = max(1, ANALYSIS_SAMPLES // cal.batch_size(g))
    outs = [g.layer(name).outputs[0] for name in sites(g)]
    auto = options.smooth_quant == "auto"
    if auto and shared is not None and _none_qualify(
            g, itertools.islice(cal.batches(g, data), limit), shared, outs):
        return {}
    # the maxima the migration divides by come from this session (outputs: the sites), as
    # they always have: a session with every tensor an output fuses less, and its values
    # differ in the last bits (all-MiniLM-L6-v2: 4.8e-6), so would the emitted weights
    absmax = channel_absmax(g, itertools.islice(cal.batches(g, data), limit),
                            onnxruntime_env(g, outs))  # onnxruntime: ~10x the executor
    return outlier_sites(absmax) if auto else absmax


def _none_qualify(g: Graph, batches: Iterable[Mapping[str, np.ndarray]], shared: FloatEnv,
                  outs: list[str]) -> bool:
    """Whether no site's outlier ratio over `batches` reaches OUTLIER_RATIO (less the
    rounding margin), run in `shared`; False from the first batch where one does (the
    exact pass then decides, so giving up early costs time, never a decision)."""
    from compiler.passes.smooth_quant import OUTLIER_RATIO, channel_absmax, outlier_ratio

    absmax: dict[str, np.ndarray] = {}
    for feeds in batches:
        seen = channel_absmax(g, (feeds,), lambda f: shared(f, outs))
        absmax = {name: np.maximum(absmax.get(name, 0.0), x) for name, x in seen.items()}
        if any(outlier_ratio(x) >= OUTLIER_RATIO * (1.0 - ROUNDING_MARGIN)
               for x in absmax.values()):
            return False
    return True


def smoothed(g: Graph, absmax: Mapping[str, np.ndarray], alpha: float | None) -> Graph:
    """`g` with SmoothQuant's migration (strength `alpha`) at the sites of `absmax`, noted;
    `g` itself when there is none."""
    from compiler.passes.smooth_quant import smooth

    if not absmax or alpha is None:
        return g
    note = f"SmoothQuant (alpha {alpha}) at {len(absmax)} norm layers"
    return replace(smooth(g, absmax, alpha), notes=g.notes + (note,))
