"""The MAC-array (systolic) cost kernel: one call over hardware configs x layers x bit choices.

Formulas and their sources:
- Compute cycles per fold follow SCALE-Sim's demand matrices (scalesim/compute/
  systolic_compute_{os,ws,is}.py, v2 and v3, checked against the package in bench/):
  os: R + C + T - 2 (ifmap T + C - 1 rows skewed over R columns; nothing is preloaded);
  ws and is: 2R + C + T - 2 (R cycles of stationary preload, then T + C - 1 rows skewed over R).
  Folds = ceil(Sr / R) * ceil(Sc / C) with (Sr, Sc, T) = os (M, N, K), ws (K, N, M),
  is (K, M, N); partial folds take a full fold's time, as in SCALE-Sim.
- A PE completes `rate` MACs per cycle at a precision (Bit Fusion, Sharma et al. ISCA 2018),
  which shortens the streamed dimension: T -> ceil(T / rate).
- Zero skipping: see kernels/sparse.py. Structured N:M weights (w_density <= N/M) compress K to
  ceil(K * N / M), as a sparse tensor core does, and carry ceil(log2 M) index bits per value.
- DRAM traffic: by default each layer reads its operands from DRAM and writes its output back
  (no inter-layer fusion, as SCALE-Sim). With `activations_on_chip` an activation tensor that
  fits the smaller of the ifmap and ofmap SRAMs (usable capacity) never crosses the DRAM link:
  its producer leaves it in the ofmap SRAM and its consumer reads it there, the two swapping
  roles between layers as SCNN's IARAM/OARAM do (Parashar et al. ISCA 2017) and as fused-layer
  accelerators keep intermediate maps on chip (Alwani et al. MICRO 2016). One capacity test
  per tensor on both sides keeps producer and consumer consistent; the model's own input and
  output cross the link once outside the layers (not charged). Weights still come from DRAM
  every inference unless resident (below). Double buffering halves each SRAM's usable
  capacity. An
  operand reused across folds is fetched once if its working set fits its SRAM, else once per
  fold that re-streams it (os: ifmap tile per column fold, filters per row fold; ws: ifmap per
  column fold; is: filters per column fold). ws/is keep partial sums in the ofmap SRAM across
  row folds; when they do not fit, the stream is chunked and each chunk re-preloads the
  stationary tile (extra fill cycles, see `psum_chunks`). Traffic is SRAM energy + DRAM bytes.
- Fold pipelining (`fold_pipelining`, a design parameter): SCALE-Sim runs folds back to back,
  each paying its fill and drain. Real arrays overlap them: the TPU's matrix unit holds "one
  64 KiB tile of weights plus one for double-buffering (to hide the 256 cycles it takes to
  shift a tile in)" and new weights "take effect with the advancing wave alongside the first
  data of a new block" (Jouppi et al. ISCA 2017, sec. 2); Gemmini's PE keeps two registers
  (c1, c2) and a `propagate` bit, so in os one accumulates the current fold while the other
  shifts the previous fold's outputs down the column and takes the next preload, and in ws one
  holds the weight in use while the other shifts the next one in (ucb-bar/gemmini
  src/main/scala/gemmini/PE.scala). So with pipelining a fold that another follows lasts
  max(its work, R): the R-deep column chain that swaps the stationary (ws/is) or output (os)
  tile needs R cycles, hidden when the fold streams for at least R; the fill and drain
  (`fold_fill`) are exposed once per layer (its groups follow each other like folds), before
  the first fold and after the last (ZigZag's latency model likewise
  charges data on-/off-loading once per layer, Mei et al. AICAS 2022).
- Weight preload across layers (`weight_preload`, a design parameter, with pipelining): the
  TPU stages weights through a Weight FIFO "four tiles deep" and double-buffers the matrix
  unit's tile "to hide the 256 cycles it takes to shift a tile in"; Read_Weights follows
  "the decoupled-access/execute philosophy" and the matrix unit stalls only "if the input
  activation or weight data is not ready" (Jouppi et al. ISCA 2017, sec. 2). A layer's
  weights do not depend on the previous layer's outputs, so in ws the next layer's first
  tile shifts in under this layer's last fold like any next tile: that fold lasts at least
  R, and the layer's once-per-layer fill loses its R preload cycles (2R + C - 2 -> R + C - 2;
  charged to the preceding layer, exact in a stream of inferences, where the model's first
  layer preloads under the previous inference's last). The skew R + C - 2 stays: its data are
  the previous layer's outputs (the TPU counts such read-after-write stalls apart). os
  streams both operands (nothing is preloaded: its fill is all skew) and is's stationary tile
  is the previous layer's output, so neither changes.
- Weights resident (`weights_resident`, a design + workload parameter): in a stream of
  inferences of one model, weights that stay in the filter SRAM are fetched once, not per
  inference (Edge TPU: the on-chip RAM "used to store the model's parameter data locally,
  enabling faster inference speed compared to fetching the data from external memory",
  coral.ai/docs/edgetpu/multiple-edgetpu; its compiler caches parameters that fit and
  streams the rest every inference, coral.ai/docs/edgetpu/compiler "parameter data caching").
  A layer at weight width w is resident when the whole model's weights at w (dense, an upper
  bound on the stored bytes) plus the vector unit's parameters fit the usable filter SRAM
  (halved when double buffered). The test is per width, so it is sound for mixed widths: the
  layers it keeps (width <= w*, the widest width at which the model fits) take at most the
  model's bytes at w*. The first inference still loads them once (not charged here).
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
from hwmodels.kernels.jit import njit, prange
from hwmodels.kernels.sparse import (
    OS,
    SKIP_A,
    SKIP_BOTH,
    SKIP_W,
    STRUCTURED,
    WS,
    ZERO_GATING,
    expected_tile_work,
    is_skipping,
)
from hwmodels.kernels.views import borrowed

PSUM_BYTES = 4.0  # partial sums accumulate in 32 bits


@njit(cache=True)
def cdiv(a: float, b: float) -> float:
    """ceil(a / b) for positive b, tolerant of float rounding."""
    return float(math.ceil(a / b - 1e-9))


@njit(cache=True)
def fold_fill(df: int, rows: int, cols: int) -> int:
    """Fill + drain cycles of one fold (SCALE-Sim: os R + C - 2, ws/is 2R + C - 2)."""
    return rows + cols - 2 if df == OS else 2 * rows + cols - 2


@njit(cache=True)
def fold_schedule(df: int, rows: int, cols: int, pipelined: bool,
                  preload: bool = False) -> tuple[int, int, int, bool]:
    """(fill/drain cycles per fold, least cycles of a fold, fill/drain cycles once per layer,
    whether the layer's last fold is free of that least).

    Back to back (SCALE-Sim): every fold pays `fold_fill`. Pipelined: a fold followed by
    another lasts at least R (the tile swap through the R-deep chain; the last fold of the
    layer waits for none, see `last_slack`) and the fill/drain shows once (module docstring).
    Pipelined with `preload` (`weight_preload`) on ws: the next layer's first weight tile
    shifts in under this layer's last fold, which then lasts at least R like the others, and
    the once-per-layer fill loses its R preload cycles (module docstring). os preloads
    nothing and is's stationary tile is the previous layer's output: unchanged.
    """
    fill = fold_fill(df, rows, cols)
    if not pipelined:
        return fill, 0, 0, True
    if preload and df == WS:
        return 0, rows, fill - rows, False
    return 0, rows, fill, True


@njit(cache=True)
def gemm_dims(df: int, m: int, n: int, k: int) -> tuple[int, int, int]:
    """(Sr, Sc, T) of SCALE-Sim's mapping: os (M, N, K), ws (K, N, M), is (K, M, N)."""
    if df == OS:
        return m, n, k
    if df == WS:
        return k, n, m
    return k, m, n


@njit(cache=True)
def tile_classes(df: int, mode: int, sr: int, sc: int, t: int, rows: int, cols: int,
                 pa: float, pw: float, tiles: np.ndarray, at: int) -> None:
    """The four fold shapes (full or partial rows x full or partial columns): tiles[at + i] is
    the shape's busiest-PE work per fold (T when dense; expected under skipping) and
    tiles[at + 4 + i] how many folds have that shape. An offset, not slices: slicing in the
    hot loop would cost a reference count per call."""
    i = at
    for full_r in (True, False):
        nr = sr // rows if full_r else (1 if sr % rows else 0)
        r = rows if full_r else sr % rows
        for full_c in (True, False):
            nc = sc // cols if full_c else (1 if sc % cols else 0)
            c = cols if full_c else sc % cols
            tiles[i + 4] = nr * nc
            skip = is_skipping(mode) and nr * nc > 0
            tiles[i] = expected_tile_work(df, mode, r, c, t, pa, pw) if skip else t
            i += 1


@njit(cache=True)
def streamed(tiles: np.ndarray, at: int, rate: float, floor: float = 0.0) -> float:
    """Streaming cycles over all folds at `rate` MACs per PE per cycle, from the four fold
    shapes `tile_classes` stored at offset `at`; a fold lasts at least `floor` cycles."""
    total = 0.0
    for i in range(at, at + 4):
        if tiles[i + 4] > 0:
            total += tiles[i + 4] * max(cdiv(tiles[i], rate), floor)
    return total


@njit(cache=True)
def last_slack(tiles: np.ndarray, at: int, rate: float, floor: float, chunks: float) -> float:
    """Cycles the floor adds to the last fold, which waits for no next tile (with `chunks`
    psum chunks a fold swaps per chunk: only its last chunk is free). The last fold is that of
    the last shape present, as SCALE-Sim orders folds (row folds outer, partial ones last)."""
    if floor <= 0.0:
        return 0.0
    for i in range(at + 3, at - 1, -1):
        if tiles[i + 4] > 0:
            return max(0.0, floor - cdiv(tiles[i], rate)) / chunks
    return 0.0


@njit(cache=True)
def stream_cycles(df: int, mode: int, sr: int, sc: int, t: int, rows: int, cols: int,
                  rate: float, pa: float, pw: float, floor: float = 0.0,
                  last_free: bool = True) -> float:
    """Streaming cycles of one GEMM summed over its folds (fill/drain excluded), a fold lasting
    at least `floor` unless it is the last and `last_free` (`last_slack`)."""
    tiles = np.zeros(8)
    tile_classes(df, mode, sr, sc, t, rows, cols, pa, pw, tiles, 0)
    slack = last_slack(tiles, 0, rate, floor, 1.0) if last_free else 0.0
    return streamed(tiles, 0, rate, floor) - slack


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
def stored_bytes(elems: float, bits: float, density: float, compressed: bool) -> float:
    """Bytes of an operand; compressed (bitmask + nonzeros) when the array skips its zeros."""
    dense = elems * bits / 8.0
    return min(dense, elems * (density * bits + 1.0) / 8.0) if compressed else dense


@njit(cache=True)
def psum_chunks(df: int, fr: int, t: int, cols: int, cap_of: float) -> int:
    """Chunks the stream T is split into so that ws/is partial sums fit the ofmap SRAM.

    ws/is accumulate a cols x T tile of partial sums across the row folds; when it does not
    fit, T is processed in chunks that do (as the TPU's 4096-row accumulators force, Jouppi et
    al. ISCA 2017) and every chunk preloads the stationary tile again. os accumulates in PEs.
    """
    if df == OS or fr <= 1:
        return 1
    per_chunk = max(1.0, math.floor(cap_of / (cols * PSUM_BYTES)))
    return math.ceil(t / per_chunk)


# Layout of the per-(config, layer) GEMM geometry shared by all bit choices
G_FIXED, G_GROUPS, G_FR, G_FC, G_CHUNKS, G_W_ELEMS, G_META_BITS = 0, 1, 2, 3, 4, 5, 6
G_A_ELEMS, G_A_MK, G_PSUM, G_EFF, G_TILES = 7, 8, 9, 10, 11  # tiles: 11..18
G_W_ACT = 19  # 1 when the second operand is an activation (act x act)
G_FLOOR = 20  # least streaming cycles of a fold (of all its psum chunks): 0 unless pipelined
# The widest resident weight width, computed once per config (G_KNOWN = 1) by
# `model_weights`: the scratch `geo` is zeroed per config by `config_rows` and its peers
G_RES_BITS, G_KNOWN = 21, 23
G_LAST_FREE = 24  # 1 when the layer's last fold waits for no next tile (`fold_schedule`)
G_SIZE = 25
# cfg_i columns after the first nine (appended, so older 9-column configs still read)
H_PIPELINED, H_RESIDENT, H_EPILOGUE, H_PRELOAD = 9, 10, 11, 12
# lay_i columns after the first eleven (may be absent: no epilogues): 1 for a GEMM's
# epilogue; on a GEMM, the parameter bytes of its epilogues
L_EPILOGUE, L_EPI_BYTES = 11, 12


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
def operand_fetches(df: int, a_bytes: float, w_bytes: float, geo: np.ndarray, cap_if: float,
                    cap_f: float) -> tuple[float, float]:
    """How many times the ifmap and filter operands come from DRAM: once if the working set
    fits its SRAM, else once per fold (or chunk) that re-streams it (module docstring)."""
    g, fr, fc, chunks = geo[G_GROUPS], geo[G_FR], geo[G_FC], geo[G_CHUNKS]
    a_fits, w_fits = a_bytes / g <= cap_if, w_bytes / g <= cap_f
    if df == OS:  # os streams an ifmap tile of R rows per row fold
        return (1.0 if a_bytes / (g * fr) <= cap_if else fc), (1.0 if w_fits else fr)
    if df == WS:
        return (1.0 if a_fits else fc), (1.0 if w_fits else chunks)
    return (1.0 if a_fits else chunks), (1.0 if w_fits else fc)


@njit(cache=True)
def sram_reads(df: int, a_mk: float, w_kn: float, geo: np.ndarray) -> tuple[float, float]:
    """Bytes the array reads from the ifmap and filter SRAMs: streamed operands once per fold
    of the other dimension (SCALE-Sim's demand matrices), stationary ones once per chunk."""
    fr, fc, chunks = geo[G_FR], geo[G_FC], geo[G_CHUNKS]
    if df == OS:
        return fc * a_mk, fr * w_kn
    if df == WS:
        return fc * a_mk, chunks * w_kn
    return chunks * a_mk, fc * w_kn


@njit(cache=True)
def on_chip_bytes(hi: np.ndarray, hf: np.ndarray) -> float:
    """Largest activation tensor (bytes) that stays on chip between layers; -1 when the
    design writes every layer's output to DRAM (see the module docstring)."""
    if hi.size < 9 or hi[8] == 0:
        return -1.0
    return float(min(hf[3], hf[5]) * (0.5 if hi[6] else 1.0))


@njit(cache=True)
def model_weights(lay_i: np.ndarray, geo: np.ndarray, hi: np.ndarray, hf: np.ndarray) -> None:
    """The widest weight width (bits, may be fractional) at which the model's weights -- all
    GEMM weights at that width plus the vector unit's parameters -- fit the usable filter SRAM
    of config `hi`, into geo[G_RES_BITS] (-1: none); geo[G_KNOWN] = 1 once done."""
    elems, vec = 0.0, 0.0
    for li in range(lay_i.shape[0]):
        if lay_i[li, 0] == CATEGORY_GEMM:
            elems += lay_i[li, 6]
        elif lay_i[li, 0] != CATEGORY_VIEW:
            vec += lay_i[li, 10]
    room = hf[4] * (0.5 if hi[6] else 1.0) - vec  # double buffering halves usable capacity
    geo[G_RES_BITS] = -1.0 if room < 0 else (np.inf if elems == 0 else room * 8.0 / elems)
    geo[G_KNOWN] = 1.0


@njit(cache=True)
def off_chip(nbytes: float, cap: float) -> float:
    """`nbytes` if that tensor crosses the DRAM link, else 0 (it fits on chip: `cap`)."""
    return 0.0 if nbytes <= cap else nbytes


@njit(cache=True)
def gemm_memory(df: int, geo: np.ndarray, a_bytes: float, w_bytes: float, o_bytes: float,
                a_mk: float, hi: np.ndarray, hf: np.ndarray, a_fit: float = -1.0,
                w_fit: float = -1.0, w_resident: bool = False) -> tuple[float, float]:
    """DRAM bytes and on-chip pJ of one GEMM layer; a_mk = bytes of the streamed ifmap.

    a_fit, w_fit: the activation operands' dense bytes, for the on-chip test (default: their
    stored bytes). Their producer writes them before any density is known, so both sides test
    the dense size -- conservative where the design stores them compressed. w_resident: the
    weights stay in the filter SRAM across inferences (`weights_resident`)."""
    usable = 0.5 if hi[6] else 1.0  # double buffering halves usable capacity
    a_get, w_get = operand_fetches(df, a_bytes, w_bytes, geo, hf[3] * usable, hf[4] * usable)
    cap = on_chip_bytes(hi, hf)
    a_on = (a_fit if a_fit >= 0 else a_bytes) <= cap
    w_on = geo[G_W_ACT] > 0 and (w_fit if w_fit >= 0 else w_bytes) <= cap
    dram_a = (0.0 if a_on else a_bytes) * a_get
    dram_w = (0.0 if w_on or w_resident else w_bytes) * w_get
    a_rd, w_rd = sram_reads(df, a_mk, w_bytes, geo)
    o_acc = o_bytes if df == OS else (2 * geo[G_FR] - 1) * geo[G_PSUM]  # psum read + write
    onchip = (a_rd + dram_a) * hf[6] + (w_rd + dram_w) * hf[7] + (o_acc + o_bytes) * hf[8]
    return dram_a + dram_w + off_chip(o_bytes, cap), onchip


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
        gemm = lay_i[li, 0] == CATEGORY_GEMM
        # which rates/energies row applies: weights, two activations, vector unit
        pick = (1 if lay_i[li, 6] == 0 else 0) if gemm else 2
        if gemm:
            gemm_geometry(lay_i, lay_f, li, hi, hf, geo)
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
