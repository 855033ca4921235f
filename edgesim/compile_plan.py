"""The compile's plan beside the allocator's own choice: HAWQ's stopping rule, the memory-fit
check, the smallest and the uniform assignments, a given plan read back, the knee's note, the
measured activation errors when activation handling is a choice, the bits the ONNX model
carries, and the plan re-costed with the convs emitted at run-time activation ranges.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.ir import Graph
from compiler.passes.quantize import QuantOptions
from edgesim import calibration as cal
from edgesim.alloc_problem import fixed_bits
from edgesim.allocation import allocate
from edgesim.budget import Budget
from edgesim.compile_options import CompileOptions, quant_options
from edgesim.errors import UserError
from edgesim.settle_rule import settled_rule
from edgesim.tables import EmittedBytes
from hwmodels import kinds

if TYPE_CHECKING:
    from hwmodels.target import Target


def settled(g: Graph, ga: Graph, target: Target, options: CompileOptions,
             emitted: EmittedBytes) -> Any:
    """HAWQ's stopping rule for this compile's allocation (None for the other methods)."""
    if options.method != "hawq":
        return None
    return settled_rule(g, ga, target, budget=options.budget, weight_bits=options.weight_bits,
                        act_bits=options.act_bits, metric=options.metric,
                        threads=options.threads, runtime=options.runtime, emitted=emitted)


def check_memory(g: Graph, bits: np.ndarray, target: Target, which: str,
                  suggest: bool = True) -> None:
    """A target with a `memory_fit` capability (an MCU) must hold the weights in flash and the
    largest layer's activations in SRAM; `which` says what assignment `bits` is, for the
    message."""
    check_fit = kinds.memory_fit(target)
    if check_fit is None:
        return
    fit = check_fit(g.layer_table(), bits, target)
    if fit.weight_bytes > fit.flash_bytes:
        over = fit.weight_bytes - fit.flash_bytes
        raise UserError(target.name, f"flash overflows by {over} bytes {which}: the weights "
                        f"take {fit.weight_bytes} bytes, flash holds {fit.flash_bytes}"
                        + (f"; try --budget size={fit.flash_bytes / 1e6:.3g}MB" if suggest
                           else ""))
    if fit.peak_act_bytes > fit.sram_bytes:
        over = fit.peak_act_bytes - fit.sram_bytes
        raise UserError(target.name, f"SRAM overflows by {over} bytes at layer "
                        f"{fit.peak_layer}: its activations take {fit.peak_act_bytes} bytes, "
                        f"the SRAM arena holds {fit.sram_bytes}")


def emitted_bits(g: Graph, bits: np.ndarray) -> np.ndarray:
    """What the ONNX model carries: the chosen bits on MAC layers; every other layer is a float
    op in ONNX (MCUs and MAC arrays run those at 8 bits, which only their cost models see)."""
    from edgesim.assignment import quantisable

    return np.where(quantisable(g)[:, None], bits, 32)


def read_assignment(g: Graph, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Bits [L, 2] from a plan JSON ({layer: bits | [w_bits, a_bits]}) or a report.json (its
    per-layer w_bits / a_bits), and a report.json's per-layer blocks, int [L] (0: none; None
    for a plan JSON)."""
    from edgesim import assignment

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError("--assignment", f"cannot read {path}: {e}") from None
    blocks = None
    if isinstance(data, dict) and isinstance(data.get("layers"), list):  # a report.json
        rows = data["layers"]
        named = {x.get("name"): x.get("block") or 0 for x in rows if isinstance(x, dict)}
        blocks = np.array([int(named.get(layer.name, 0)) for layer in g.layers], dtype=np.int64)
        data = {x["name"]: [x["w_bits"], x["a_bits"]] for x in rows
                if (x["w_bits"], x["a_bits"]) != (32, 32)}
    return assignment.resolve(g, data), blocks


def smallest(g: Graph, target: Target, weight_bits: Sequence[int]) -> np.ndarray:
    """The assignment with the least memory: MAC layers at the fewest bits, 8-bit activations."""
    from edgesim.assignment import quantisable

    bits = fixed_bits(g, target)
    bits[quantisable(g)] = (min(weight_bits), 8)
    return bits


ACT_TERM_SAMPLES = 16  # calibration samples that measure each choice's own output error


def act_errors(g: Graph, tgt: Target, sens: Any, data: cal.CalibrationData,
                options: CompileOptions) -> np.ndarray | None:
    """Each layer's measured output error per candidate when `--act-bits` offers both
    quantised and float activations (activation handling is then a choice); else None."""
    import itertools

    from edgesim.allocation import choice_errors
    from edgesim.float_pass import float_pass

    acts = set(options.act_bits or ())
    if not (acts & {4, 8} and 32 in acts) or options.assignment is not None:
        return None
    stats = float_pass(g, data, stats=True).stats
    limit = max(1, ACT_TERM_SAMPLES // cal.batch_size(g))
    return choice_errors(g, tgt, sens, stats, itertools.islice(cal.batches(g, data), limit),
                         weight_bits=options.weight_bits, act_bits=options.act_bits,
                         options=quant_options(options, tgt))


def knee_note(g: Graph, bits: np.ndarray, target: Target) -> tuple[str, ...]:
    """Why the knee (no budget) barely compressed: fewer bits buy the target little."""
    from edgesim.assignment import has_weights, quantisable

    mac = quantisable(g) & has_weights(g)
    w = g.layer_table().w_elems[mac].astype(np.float64)
    avg = float((np.minimum(bits[mac, 0], 32) * w).sum() / max(w.sum(), 1.0))
    if avg <= 16:
        return ()
    return (f"the knee keeps {avg:.1f} weight bits on average: on {target.name} fewer bits "
            "buy this model little of the metric (its layers are bound by overheads or "
            "activations, not weights); pass --budget (e.g. bits=4 or size=...) to compress "
            "further",)


def metric_total(alloc: Any, metric: str) -> float:
    """The chosen assignment's predicted total of a budget metric (base units)."""
    c = alloc.cost
    return float({"size": lambda: c.weight_bytes.sum(), "latency": lambda: c.latency_s.sum(),
                  "energy": lambda: (c.energy_pj_compute + c.energy_pj_onchip
                                     + c.energy_pj_dram).sum()}[metric]())


def uniform_allocation(g: Graph, target: Target, sens: Any, options: CompileOptions) -> Any:
    """`--method uniform`: every MAC layer at one weight width -- the widest candidate whose
    uniform assignment meets the budget (8 bits, or the widest below 8, without one). A bits
    budget of w with only w to choose from forces every MAC layer to w exactly."""
    budget = options.budget
    limit = 8 if budget is None else (budget.value if budget.metric == "bits" else math.inf)
    widths = sorted((w for w in options.weight_bits if w <= limit), reverse=True)
    for w in widths:
        alloc = allocate(g, target, sens=sens, budget=Budget("bits", w), weight_bits=(w,),
                         act_bits=options.act_bits, threads=options.threads,
                         runtime=options.runtime, blocks=options.blocks)
        if budget is None or budget.metric == "bits" or \
                metric_total(alloc, budget.metric) <= budget.value:
            note = f"uniform: every MAC layer at {w} weight bits"
            return replace(alloc, notes=(note, *alloc.notes))
    raise UserError("--budget", f"no uniform width of {list(options.weight_bits)} meets "
                    f"{budget}; try a larger budget or --method hawq")


def with_dynamic(quant: QuantOptions, g: Graph, bits: np.ndarray, stats: Any, tgt: Target,
                  options: CompileOptions) -> QuantOptions:
    """`quant` with the W8A8 convs whose static output requantisation costs them most run
    at run-time activation ranges, where the plan's latency can afford it
    (`edgesim.alloc_dynamic`)."""
    from compiler.passes.quantize import policy
    from edgesim.alloc_dynamic import affordable, dynamic_convs

    calib = stats.stats if stats is not None else None
    names = affordable(g, dynamic_convs(g, bits, calib, policy(quant)), bits, tgt,
                       threads=options.threads, runtime=options.runtime)
    return replace(quant, dynamic_layers=names)


def priced(alloc: Any, g: Graph, quant: QuantOptions, target: Target,
            options: CompileOptions) -> Any:
    """`alloc` with the convs emitted dynamic costed as such (`alloc_dynamic.priced_alloc`)."""
    from edgesim.alloc_dynamic import priced_alloc

    return priced_alloc(alloc, g, quant.dynamic_layers, target, threads=options.threads,
                        runtime=options.runtime)
