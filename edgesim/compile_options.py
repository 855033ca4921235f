"""`CompileOptions`, everything `edgesim compile` takes besides the model and the target, and
what its fields become for the passes the compile runs: the loader's options, the quantize
pass's options, the range search's time bound and the block choices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.ir import Graph
from compiler.passes.quantize import QuantOptions
from edgesim.budget import DEFAULT_ANALYSIS_BUDGET_S, Budget
from edgesim.errors import UserError
from hwmodels import kinds

if TYPE_CHECKING:
    from edgesim.report_plots import Plotter
    from hwmodels.target import Target


@dataclass(frozen=True)
class CompileOptions:
    """Everything `edgesim compile` takes besides the model and the target."""

    method: str = "hawq"
    budget: Budget | None = None
    weight_bits: tuple[int, ...] = (2, 3, 4, 6, 8)
    act_bits: tuple[int, ...] | None = None
    metric: str = "latency"
    threads: int | None = None
    runtime: str = "onnxruntime"
    input_shapes: Mapping[str, Sequence[int]] | None = None
    input_values: Mapping[str, Any] | None = None   # inputs pinned to a value (If folding)
    batch_axes: Mapping[str, int | None] | None = None  # declared batch axes of inputs
    fidelity_metric: Any = None  # (reference, test) -> float replacing the primary metric
    calib_method: str | None = None  # activation ranges: minmax/percentile/mse/entropy
    # SmoothQuant migration strength alpha at every site, None: off, "auto": AUTO_ALPHA at
    # the sites with outlier channels, when static 8-bit activations are among the choices
    smooth_quant: float | str | None = "auto"
    rounding: str = "rtn"  # weight codes: "rtn" or "gptq" (second-order, calibration data)
    bias_correction: bool = True  # remove <= 4-bit weight-only layers' mean output shift
    quiet: bool = False
    command: str = ""
    sparsity: tuple[float, ...] = ()  # candidate activation sparsities (edgesim.sparsity)
    kernel_check: str = "fail"  # "fail" | "report" | "off": onnxruntime's kernels vs the plan
    pick: int | None = None     # emit this point of the front (0 = cheapest) instead
    assignment: str | None = None  # plan.json or report.json: re-emit its bits, no analysis
    force: bool = False  # write into a non-empty folder edgesim did not make
    verify: bool = False  # run compiler.verify on the loaded IR (`--debug`)
    min_fidelity: float | None = None  # fail below this primary fidelity metric (fp32 ref)
    # HAWQ's / LRP's time bound (None: unbounded)
    analysis_budget_s: float | None = DEFAULT_ANALYSIS_BUDGET_S
    blocks: tuple[int, ...] | None = None  # per-layer block choices of per-block rows
    # bound of the end-to-end activation range search, in seconds of its trial runs' charged
    # work (`edgesim.ranges`; None: RANGE_SHARE of analysis_budget_s when that is given,
    # else unbounded)
    range_budget_s: float | None = None
    # who draws pareto.png and layers.png: "process" (a child process started with the
    # compile), "inline" (this process, at the end), "auto" (a process unless this one
    # has imported matplotlib already), or a Plotter already started; see
    # edgesim.report_plots
    plots: str | Plotter = "auto"


# The range search's bound as a share of the analysis budget, when only that is given. Both
# count charged work at `time_budget.WORK_RATE`: the analysis's probing pace, which need not
# be onnxruntime's for a trial's run. At the 5 s default the full search (8 assignments) is
# about 12 s of work on resnet18, 4.3-6.0 s on PP-OCR, 2.1-2.2 s on magika and mobilenet_v2
# (estimated: the trial runs of bench/bench_range_screen.py's searches, in the E2E_SCREEN
# comment of `edgesim.ranges`, times the samples each run holds, times `pass_seconds` per
# sample: 0.18, 0.075, 0.037, 0.031 s; no compile was timed for this). 3x keeps all of them
# uncut, as they were under the old bound of 5 CPU-s (their whole quantize-and-emit phase
# took 0.13-1.69 s in COMMON's idle baseline, base15). A shorter search picks worse ranges;
# ddddocr's CRNN and FastMRZ stopped at 5 CPU-s and may now stop at other points.
RANGE_SHARE = 3.0


def range_budget(options: CompileOptions) -> float | None:
    """The end-to-end range search's bound in seconds of charged work (None: unbounded)."""
    if options.range_budget_s is not None:
        return options.range_budget_s
    budget = options.analysis_budget_s
    return None if budget is None else RANGE_SHARE * budget


def quant_options(options: CompileOptions, target: Target) -> QuantOptions:
    """The quantize pass's options: the format policy's target capabilities (int8
    MatMulNBits where MLAS has it), the user's activation range method and weight rounding."""
    from compiler.passes.calibrate import METHODS

    if options.calib_method not in (None, *METHODS):
        raise UserError("--calib-method", f"{options.calib_method!r} is not one of {METHODS}")
    if options.rounding not in ("rtn", "gptq"):
        raise UserError("--rounding", f"must be rtn or gptq, got {options.rounding!r}")
    return QuantOptions(act_method=options.calib_method or QuantOptions.act_method,
                        rounding=options.rounding, int8_dot=kinds.int8_dot(target),
                        bias_correction_bits=QuantOptions.bias_correction_bits
                        if options.bias_correction else 0)


def with_blocks(quant: QuantOptions, g: Graph, blocks: np.ndarray | None) -> QuantOptions:
    """`quant` with the allocator's block per layer (`AllocationResult.blocks`)."""
    if blocks is None:
        return quant
    return replace(quant, layer_blocks={layer.name: int(b) for layer, b in zip(g.layers, blocks)
                                        if b > 0})


def block_choices(blocks: tuple[int, ...] | None, given: np.ndarray | None
            ) -> tuple[int, ...] | None:
    """The block choices: the user's, else those a given plan names (None: neither)."""
    named = () if given is None else tuple(sorted({int(b) for b in given if b > 0}))
    return blocks or named or None


def load_options(options: CompileOptions) -> dict[str, Any]:
    """What `load_graph` takes besides the shapes: pinned input values, batch axes."""
    return {"input_values": options.input_values, "batch_axes": options.batch_axes}
