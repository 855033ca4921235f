"""The latency floor of a bench_sparsity plan (its joint part's `bits_only_bound`): how far
activation sparsity could take a plan on a zero-skipping MAC array under the cost model, and
which term of the density-0 latency stays and why. A part of `bench_sparsity.py`, not a
benchmark of its own.
"""

import dataclasses

import numpy as np

from compiler.ir import CATEGORY_GEMM, Graph
from edgesim.sparsity_costs import dram_pj_per_byte
from hwmodels.macarray import evaluate as macarray_evaluate
from hwmodels.sparsity import expected_terms


def _per_layer_us(cost, col: np.ndarray) -> np.ndarray:
    return cost.latency_s[np.arange(len(col)), col] * 1e6


def bound(g1: Graph, layers: tuple[str, ...], plan: dict, target,
          bit_pairs: tuple[tuple[int, int], ...]) -> dict:
    """Why a plan's latency can or cannot drop with activation sparsity, from the array's
    cost model at the plan's bits: per MAC layer the fold fill/drain (compute at density 0),
    the weights' DRAM time (activations stay on chip on this design) and the latency with
    every MAC input at density 0 -- the most any threshold could buy; plus the vector unit.
    `bit_pairs`: the (w_bits, a_bits) the plan's `bits` are drawn from."""
    table = g1.layer_table()
    chosen = {n: bit_pairs.index(tuple(b)) for n, b in zip(layers, plan["bits"])}
    col = np.array([chosen.get(n, bit_pairs.index((8, 8))) for n in table.names])
    gemm = table.category == CATEGORY_GEMM
    empty = dataclasses.replace(table, a_density=np.where(gemm, 0.0, table.a_density))
    pairs = np.array(bit_pairs)
    ideal = _per_layer_us(macarray_evaluate(empty, pairs, target), col)
    fast = dataclasses.replace(target, dram_bandwidth_gbps=1e12)
    fill = _per_layer_us(macarray_evaluate(empty, pairs, fast), col)
    cost = macarray_evaluate(table, pairs, target)
    pj_per_byte = dram_pj_per_byte(target)
    dram = cost.energy_pj_dram[np.arange(len(col)), col] / pj_per_byte \
        / (target.dram_bandwidth_gbps * 1e3)
    rows = [{"layer": n, "fill_us": round(float(fill[i]), 3),
             "weight_dram_us": round(float(dram[i]), 3),
             "at_density_0_us": round(float(ideal[i]), 3)}
            for i, n in enumerate(table.names) if gemm[i]]
    floor = float(ideal.sum())
    epi = [i for i, n in enumerate(table.names) if n in g1.epilogues()]
    unfused = _per_layer_us(macarray_evaluate(
        empty, pairs, dataclasses.replace(target, fused_epilogue=False)), col)
    terms = density0_terms(table, col, target, ideal, bit_pairs)
    any_bits = np.min(macarray_evaluate(empty, pairs, target).latency_s, axis=1) * 1e6
    return {"plan_latency_us": plan["latency_us"], "latency_at_density_0_us": round(floor, 3),
            "max_speedup_any_sparsity": round(plan["latency_us"] / floor, 3),
            # density 0 and each layer at its fastest bit pair, accuracy ignored: no plan of
            # bits and thresholds can go below this under the model
            "latency_at_density_0_fastest_bits_us": round(float(any_bits.sum()), 3),
            "max_speedup_any_plan": round(plan["latency_us"] / float(any_bits.sum()), 3),
            # the density-0 latency split by cause; the largest term bounds the speed-up
            "density_0_terms_us": terms,
            "bounding_term": max(terms, key=terms.get),
            "why_terms_stay": WHY,
            "vector_unit_us": round(float(ideal[~gemm].sum()), 3),
            # GEMM epilogues (bias, scale, ReLU/clip: compiler.ir.Graph.epilogues): their time
            # in the model (0 when the target fuses them on the accumulator drain) and as
            # separate vector-unit passes (fused_epilogue: false)
            "fused_epilogue": target.fused_epilogue,
            "vector_epilogue_us": round(float(ideal[epi].sum()), 3),
            "vector_epilogue_unfused_us": round(float(unfused[epi].sum()), 3),
            "mac_fill_us": round(float(fill[gemm].sum()), 3),
            "mac_weight_dram_us": round(float(dram[gemm].sum()), 3), "mac_layers": rows}


# Why each density-0 term stays on sparse-mac-32x32 (os, pipelined, weights resident, fused
# epilogues, weight preload), i.e. why no sourced mechanism in the model removes it
WHY = {
    "fill": "R + C - 2 = 62 cycles once per GEMM: the operand skew of its first fold, whose "
            "activations are the previous layer's outputs (read-after-write; the TPU counts "
            "such stalls apart). os streams its weights, so preloading the next layer's "
            "weights (weight_preload, TPU v1 Weight FIFO) has nothing to hide here",
    "swap": "a pipelined fold followed by another lasts >= R = 32 cycles: the output tile "
            "shifts down the 32-deep column while the next fold accumulates (Gemmini PE "
            "c1/c2 + propagate); zeros shorten the work, not the chain",
    "dram": "weights the filter SRAM cannot keep (resident test per width over the whole "
            "model) stream every inference; activations do not reduce weight bytes",
    "vector": "non-GEMM layers the accumulator drain does not take (LayerNorm, softmax, GELU, "
              "residual adds; pools and ReLUs right after a GEMM fuse) run on the 32-lane "
              "vector unit: not MAC inputs, so thresholds cannot skip them",
}


def density0_terms(table, col: np.ndarray, target, ideal_us: np.ndarray,
                   bit_pairs: tuple[tuple[int, int], ...]) -> dict:
    """Latency at density 0 (plan's bits) by cause, us: the MAC layers' fill and swap (their
    work is 0: `hwmodels.sparsity.expected_terms`), the weight DRAM time compute does not
    hide (the rest of their latency) and the vector unit's."""
    out = dict.fromkeys(("fill", "swap", "dram", "vector"), 0.0)
    for i in range(len(table)):
        if table.category[i] != CATEGORY_GEMM:
            out["vector"] += float(ideal_us[i])
            continue
        g, bits = int(table.groups[i]), bit_pairs[col[i]]
        parts = [expected_terms(int(table.m[i]), int(table.n[i]), int(table.k[i]), 0.0,
                                float(table.w_density[i]), target, bits, j == 0, j == g - 1)
                 for j in range(g)]
        fill = sum(p.fill for p in parts) / (target.clock_ghz * 1e3)
        swap = sum(p.swap for p in parts) / (target.clock_ghz * 1e3)
        out["fill"] += fill
        out["swap"] += swap
        out["dram"] += max(0.0, float(ideal_us[i]) - fill - swap)
    return {k: round(v, 3) for k, v in out.items()}
