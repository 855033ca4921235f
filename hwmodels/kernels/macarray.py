"""The MAC-array (systolic) cost kernel: one call over hardware configs x layers x bit choices.

The model has three parts: `kernels.macarray_folds` (compute cycles of a GEMM's folds, with
pipelining and weight preload), `kernels.macarray_traffic` (DRAM bytes, SRAM energy, weights
resident) and this module, which assembles them per layer and bit choice (formulas below).

Formulas and their sources:
- Zero skipping: see kernels/sparse.py. Structured N:M weights (w_density <= N/M) compress K to
  ceil(K * N / M), as a sparse tensor core does, and carry ceil(log2 M) index bits per value.
- Latency: double buffered -> max(compute, DRAM cycles) (transfers overlap compute); otherwise
  compute + DRAM cycles. Bound: 2 (DRAM) when DRAM cycles exceed compute, else 0; never 1,
  since the SRAMs are taken to feed the array's edges every cycle, as in SCALE-Sim's compute
  model. Utilisation counts effectual MACs against rows x cols x rate per cycle.
- Non-GEMM layers run on a vector unit of `lanes` lanes at one op per lane per cycle (copies
  move one element per lane per cycle); reshape-like views are free.
- Fused epilogues (`fused_epilogue`, a design parameter): a GEMM's bias add, scale,
  ReLU/clip and pooling (`compiler.ir.Graph.epilogues`) are applied to its results as they
  drain from the accumulators -- TPU v1's activation unit sits on the accumulator outputs and
  "can also perform the pooling operations needed for convolutions" (Jouppi et al. ISCA
  2017, sec. 2), Gemmini applies scale, bias and activation on accumulator readout
  (ucb-bar/gemmini AccumulatorScale.scala) and max-pools as it moves results out
  (StoreController.scala). They cost no vector pass and no activation traffic, only the
  drain-rate bound when the lanes do fewer ops per cycle than the array's columns drain
  results (`epilogue_layer`). Off, each is a separate vector-unit pass (SCALE-Sim has none).
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import CATEGORY_GEMM, CATEGORY_STREAM, CATEGORY_VIEW
from hwmodels.kernels.arith import cdiv
from hwmodels.kernels.jit import njit, prange
from hwmodels.kernels.macarray_folds import (
    PSUM_BYTES,
    fold_schedule,
    gemm_dims,
    last_slack,
    psum_chunks,
    streamed,
    tile_classes,
)
from hwmodels.kernels.macarray_layout import (
    G_A_ELEMS,
    G_A_MK,
    G_CHUNKS,
    G_EFF,
    G_FC,
    G_FIXED,
    G_FLOOR,
    G_FR,
    G_GROUPS,
    G_KNOWN,
    G_LAST_FREE,
    G_META_BITS,
    G_PSUM,
    G_RES_BITS,
    G_SIZE,
    G_TILES,
    G_W_ACT,
    G_W_ELEMS,
    H_EPILOGUE,
    H_PIPELINED,
    H_PRELOAD,
    H_RESIDENT,
    L_EPI_BYTES,
    L_EPILOGUE,
)
from hwmodels.kernels.macarray_traffic import (
    gemm_memory,
    model_weights,
    off_chip,
    on_chip_bytes,
    stored_bytes,
)
from hwmodels.kernels.sparse import SKIP_A, SKIP_BOTH, SKIP_W, STRUCTURED, ZERO_GATING
from hwmodels.kernels.views import borrowed


@njit(cache=True)
def effectual_fraction(mode: int, pa: float, pw: float) -> float:
    """Fraction of MACs actually performed (skipped or gated MACs spend no energy)."""
    if mode == SKIP_A:
        return pa
    if mode == SKIP_W:
        return pw
    if mode == SKIP_BOTH or mode == ZERO_GATING:
        return pa * pw
    return 1.0


@njit(cache=True)
def gemm_geometry(lay_i: np.ndarray, lay_f: np.ndarray, li: int, hi: np.ndarray,
                  hf: np.ndarray, geo: np.ndarray) -> None:
    """Everything about GEMM layer `li` on a config that no bit width changes, into `geo`."""
    m, n, k, g = lay_i[li, 1], lay_i[li, 2], lay_i[li, 3], lay_i[li, 4]
    w_elems, a_in, wd, ad = lay_i[li, 6], lay_i[li, 7], lay_f[li, 0], lay_f[li, 1]
    df, rows, cols, mode, sp_n, sp_m = hi[0], hi[1], hi[2], hi[3], hi[4], hi[5]
    structured = mode == STRUCTURED and wd <= sp_n / sp_m + 1e-9
    k2 = math.ceil(k * sp_n / sp_m) if structured else k
    sr, sc, t = gemm_dims(df, m, n, k2)
    fr, fc = math.ceil(sr / rows), math.ceil(sc / cols)
    chunks = psum_chunks(df, fr, t, cols, hf[5] * (0.5 if hi[6] else 1.0))
    pipelined = hi.size > H_PIPELINED and hi[H_PIPELINED] != 0
    preload = hi.size > H_PRELOAD and hi[H_PRELOAD] != 0
    per_fold, floor, once, last_free = fold_schedule(df, rows, cols, pipelined, preload)
    geo[G_FIXED] = g * chunks * fr * fc * per_fold + once
    geo[G_FLOOR] = floor * chunks  # a fold of `chunks` chunks swaps its tile once per chunk
    geo[G_LAST_FREE] = 1.0 if last_free else 0.0
    geo[G_GROUPS], geo[G_FR], geo[G_FC], geo[G_CHUNKS] = g, fr, fc, chunks
    w_ops = float(w_elems) if w_elems > 0 else float(g * k * n)  # act x act matmul: 2nd input
    kept = k2 / k if k > 0 else 1.0  # share of K left after N:M compression
    geo[G_W_ELEMS] = w_ops * kept
    geo[G_META_BITS] = math.ceil(math.log2(sp_m)) if structured else 0.0
    geo[G_A_ELEMS] = max(float(a_in) - (0.0 if w_elems > 0 else w_ops), 0.0)
    geo[G_A_MK] = g * m * k2  # elements of the streamed (im2col) ifmap operand
    geo[G_PSUM] = g * m * n * PSUM_BYTES
    geo[G_EFF] = effectual_fraction(mode, ad, wd) * kept
    geo[G_W_ACT] = 0.0 if w_elems > 0 else 1.0
    tile_classes(df, mode, sr, sc, t, rows, cols, ad, wd, geo, G_TILES)


@njit(cache=True)
def gemm_layer(geo: np.ndarray, macs: float, a_out: float, wd: float, ad: float, wb: float,
               ab: float, rate: float, e_mac: float, hi: np.ndarray, hf: np.ndarray,
               out: np.ndarray, resident: bool = False) -> None:
    """One GEMM layer at one bit choice: out = (compute cycles, DRAM bytes, on-chip pJ,
    compute pJ, effectual MACs), from its `gemm_geometry`; `resident`: weights stay on chip
    across inferences (ignored for a second activation operand)."""
    mode = hi[3]
    skip_a = mode == SKIP_A or mode == SKIP_BOTH
    skip_w = mode == SKIP_W or mode == SKIP_BOTH
    floor = geo[G_FLOOR]
    out[0] = geo[G_FIXED] + geo[G_GROUPS] * streamed(geo, G_TILES, rate, floor)
    if floor > 0.0 and geo[G_LAST_FREE] != 0.0:
        out[0] -= last_slack(geo, G_TILES, rate, floor, geo[G_CHUNKS])
    w_bytes = stored_bytes(geo[G_W_ELEMS], wb + geo[G_META_BITS], wd, skip_w)
    a_bytes = stored_bytes(geo[G_A_ELEMS], ab, ad, skip_a)
    a_mk = geo[G_A_MK] * ab / 8.0 * (ad if skip_a else 1.0)
    out[1], out[2] = gemm_memory(hi[0], geo, a_bytes, w_bytes, a_out * ab / 8.0, a_mk, hi, hf,
                                 geo[G_A_ELEMS] * ab / 8.0, geo[G_W_ELEMS] * wb / 8.0,
                                 resident and geo[G_W_ACT] == 0)
    out[3] = macs * geo[G_EFF] * e_mac
    out[4] = macs * geo[G_EFF]


@njit(cache=True)
def vector_layer(cat: int, ops: int, a_in: int, a_out: int, w_bytes: int, ab: float,
                 e_op: float, lanes: int, hf: np.ndarray, out: np.ndarray,
                 act_cap: float = -1.0, w_resident: bool = False) -> None:
    """A non-GEMM layer on the vector unit; same outputs as `gemm_layer` (no MACs).
    `act_cap`: `on_chip_bytes` of the config (its inputs, all together, and its output each
    stay on chip when they fit); `w_resident`: its parameters stay on chip across inferences."""
    if cat == CATEGORY_VIEW:
        out[:] = 0.0
        return
    work = max(ops, a_out) if cat == CATEGORY_STREAM else a_out
    in_b, out_b = a_in * ab / 8.0, a_out * ab / 8.0
    out[0] = cdiv(work, lanes) if work > 0 else 0.0
    w_dram = 0.0 if w_resident else float(w_bytes)
    out[1] = off_chip(in_b, act_cap) + off_chip(out_b, act_cap) + w_dram
    # DRAM->SRAM->lanes and back; resident parameters are only read
    out[2] = (2.0 * in_b + w_bytes + w_dram) * hf[6] + 2.0 * out_b * hf[8]
    out[3] = work * e_op if cat == CATEGORY_STREAM else 0.0
    out[4] = 0.0


@njit(cache=True)
def epilogue_layer(ops: int, a_in: int, a_out: int, e_op: float, lanes: int, cols: int,
                   out: np.ndarray) -> None:
    """A GEMM's epilogue applied as its results drain (`fused_epilogue`); outputs as
    `vector_layer`. The array drains `cols` results per cycle; lanes that keep up add no
    cycle, fewer lanes throttle the drain: the excess of ceil(work / lanes) over the drain's
    own ceil(a_in / cols) (a pool reads more results than it writes). Its input and output
    never leave the accumulator path and its parameters travel with its GEMM's operands
    (`fused_params`); the ops still cost energy."""
    work = max(ops, a_out)
    out[0] = max(0.0, cdiv(work, lanes) - cdiv(a_in, cols)) if work > 0 else 0.0
    out[1], out[2], out[4] = 0.0, 0.0, 0.0
    out[3] = work * e_op


@njit(cache=True)
def fused_params(nbytes: float, resident: bool, hf: np.ndarray, out: np.ndarray) -> None:
    """Add a GEMM's fused epilogue parameters (`nbytes`: bias, scales) to its DRAM bytes and
    on-chip pJ in `out`: they are loaded with its operands (Gemmini moves a bias into the
    accumulator before the GEMM), so double buffering overlaps them with its compute."""
    dram = 0.0 if resident else nbytes
    out[1] += dram
    out[2] += (nbytes + dram) * hf[6]


@njit(cache=True)
def finish(raw: np.ndarray, rate: float, pes: float, hi: np.ndarray, hf: np.ndarray,
           o: np.ndarray) -> None:
    """Latency, bound, energy split and utilisation from one layer's raw figures.
    o = (cycles, latency_s, e_compute, e_onchip, e_dram, bound, util)."""
    dram_cycles = raw[1] / (hf[1] / hf[0])  # bytes / (GB/s / GHz = bytes per cycle)
    cycles = max(raw[0], dram_cycles) if hi[6] else raw[0] + dram_cycles
    o[0] = cycles
    o[1] = cycles / (hf[0] * 1e9)
    o[2] = raw[3]
    o[3] = raw[2]
    o[4] = raw[1] * hf[2]
    o[5] = 2.0 if dram_cycles > raw[0] else 0.0
    o[6] = min(1.0, raw[4] / (cycles * pes * rate)) if cycles > 0 and rate > 0 else 0.0


@njit(cache=True)
def layer_at(lay_i: np.ndarray, lay_f: np.ndarray, li: int, geo: np.ndarray, pick: int,
             wb: float, ab: float, r: float, e: float, hi: np.ndarray, hf: np.ndarray,
             raw: np.ndarray, res: np.ndarray) -> None:
    """Layer `li` at one bit choice on one config, into res (see `finish`)."""
    # weights_resident (cfg_i column 10): the whole model's weights at width wb fit on chip;
    # tested inline (a call passing arrays costs reference counts in this hot loop)
    keep = hi.size > H_RESIDENT and hi[H_RESIDENT] != 0
    if keep and geo[G_KNOWN] == 0.0:
        model_weights(lay_i, geo, hi, hf)
    resident = keep and wb <= geo[G_RES_BITS]
    fuse = hi.size > H_EPILOGUE and hi[H_EPILOGUE] != 0 and lay_i.shape[1] > L_EPI_BYTES
    if r <= 0.0:  # unsupported precision
        for q in range(5):
            res[q] = np.inf
        res[5], res[6] = 0.0, 0.0
    elif pick < 2:
        gemm_layer(geo, lay_i[li, 5], lay_i[li, 8], lay_f[li, 0], lay_f[li, 1],
                   ab if pick == 1 else wb, ab, r, e, hi, hf, raw, resident)
        if fuse and lay_i[li, L_EPI_BYTES] > 0:
            fused_params(float(lay_i[li, L_EPI_BYTES]), resident, hf, raw)
        finish(raw, r, hi[1] * hi[2], hi, hf, res)
    elif fuse and lay_i[li, L_EPILOGUE] != 0:
        epilogue_layer(lay_i[li, 9], lay_i[li, 7], lay_i[li, 8], e, hi[7], hi[2], raw)
        finish(raw, 1.0, float(hi[7]), hi, hf, res)
    else:
        vector_layer(lay_i[li, 0], lay_i[li, 9], lay_i[li, 7], lay_i[li, 8], lay_i[li, 10], ab,
                     e, hi[7], hf, raw, on_chip_bytes(hi, hf), resident)
        finish(raw, 1.0, float(hi[7]), hi, hf, res)


@njit(cache=True, inline="always")  # once per layer in the hot loop: no call of its own
def layer_setup(lay_i: np.ndarray, lay_f: np.ndarray, li: int, hi: np.ndarray, hf: np.ndarray,
                geo: np.ndarray) -> int:
    """The rates/energies row layer `li` reads at every bit choice (0: weights, 1: a matmul of
    two activations, 2: the vector unit); a GEMM's `gemm_geometry` goes into `geo` first."""
    if lay_i[li, 0] != CATEGORY_GEMM:
        return 2
    gemm_geometry(lay_i, lay_f, li, hi, hf, geo)
    return 1 if lay_i[li, 6] == 0 else 0


@njit(cache=True)
def config_rows(h: int, lay_i: np.ndarray, lay_f: np.ndarray, w_bits: np.ndarray,
                a_bits: np.ndarray, cfg_i: np.ndarray, cfg_f: np.ndarray, rates: np.ndarray,
                energies: np.ndarray, out: np.ndarray) -> None:
    """Fill out[:, h] for config h (see `evaluate`); scratch arrays allocated once here."""
    n_l, n_b = out.shape[2], out.shape[3]
    scratch = np.zeros(5 + 7 + G_SIZE)  # raw, res, geo; held here while their views work
    # views numba does not reference-count (`kernels.views`): 2x fewer CPU-s, same numbers
    raw, res, geo = (borrowed(scratch[:5]), borrowed(scratch[5:12]),
                     borrowed(scratch[12:]))
    hi, hf = borrowed(cfg_i[h]), borrowed(cfg_f[h])
    lay_i, lay_f = borrowed(lay_i), borrowed(lay_f)
    for li in range(n_l):
        pick = layer_setup(lay_i, lay_f, li, hi, hf, geo)
        for b in range(n_b):
            layer_at(lay_i, lay_f, li, geo, pick, w_bits[b], a_bits[b], rates[pick, h, b],
                     energies[pick, h, b], hi, hf, raw, res)
            for q in range(7):
                out[q, h, li, b] = res[q]


@njit(cache=True, parallel=True)
def evaluate(lay_i: np.ndarray, lay_f: np.ndarray, w_bits: np.ndarray, a_bits: np.ndarray,
             cfg_i: np.ndarray, cfg_f: np.ndarray, rates: np.ndarray, energies: np.ndarray,
             out: np.ndarray) -> None:
    """Fill out[7, H, L, B] with (cycles, latency_s, e_compute, e_onchip, e_dram, bound, util).

    lay_i [L, 13]: category, m, n, k, groups, macs, w_elems, a_in, a_out, ops, w_bytes,
    epilogue, epilogue parameter bytes (the last two may be absent: none);
    lay_f [L, 2]: w_density, a_density.
    cfg_i [H, 13]: dataflow, rows, cols, sparsity, sp_n, sp_m, double_buffered, lanes,
    activations_on_chip, fold_pipelining, weights_resident, fused_epilogue, weight_preload
    (the last four may be absent: off); cfg_f [H, 9]: clock_ghz, dram_gbps,
    dram pJ/byte, ifmap/filter/ofmap SRAM bytes, ifmap/filter/ofmap SRAM pJ/byte.
    rates [3, H, B]: MACs per PE per cycle at (w_bits, a_bits) and at (a_bits, a_bits) (matmul
    of two activations), and vector-unit support (1/0); energies [3, H, B]: the matching pJ per
    MAC and pJ per vector op. A rate of 0 marks an unsupported precision: infinite cost.
    """
    for h in prange(out.shape[1]):  # configs in parallel
        config_rows(h, lay_i, lay_f, w_bits, a_bits, cfg_i, cfg_f, rates, energies, out)


@njit(cache=True)
def evaluate_serial(lay_i: np.ndarray, lay_f: np.ndarray, w_bits: np.ndarray,
                    a_bits: np.ndarray, cfg_i: np.ndarray, cfg_f: np.ndarray,
                    rates: np.ndarray, energies: np.ndarray, out: np.ndarray) -> None:
    """`evaluate` on one thread: for calls too small to pay for waking the thread pool."""
    for h in range(out.shape[1]):
        config_rows(h, lay_i, lay_f, w_bits, a_bits, cfg_i, cfg_f, rates, energies, out)
