"""How long a GEMM streams through a rows x cols systolic array: its folds, their fill and
drain, and what pipelining and weight preload hide (the compute-cycle half of the MAC-array
model; `kernels.macarray` assembles the layers, `kernels.macarray_traffic` moves the bytes).

Formulas and their sources:
- Compute cycles per fold follow SCALE-Sim's demand matrices (scalesim/compute/
  systolic_compute_{os,ws,is}.py, v2 and v3, checked against the package in bench/):
  os: R + C + T - 2 (ifmap T + C - 1 rows skewed over R columns; nothing is preloaded);
  ws and is: 2R + C + T - 2 (R cycles of stationary preload, then T + C - 1 rows skewed over R).
  Folds = ceil(Sr / R) * ceil(Sc / C) with (Sr, Sc, T) = os (M, N, K), ws (K, N, M),
  is (K, M, N); partial folds take a full fold's time, as in SCALE-Sim.
- A PE completes `rate` MACs per cycle at a precision (Bit Fusion, Sharma et al. ISCA 2018),
  which shortens the streamed dimension: T -> ceil(T / rate).
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
"""

from __future__ import annotations

import math

import numpy as np

from hwmodels.kernels.arith import cdiv
from hwmodels.kernels.jit import njit
from hwmodels.kernels.sparse import OS, WS, expected_tile_work, is_skipping

PSUM_BYTES = 4.0  # partial sums accumulate in 32 bits


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
