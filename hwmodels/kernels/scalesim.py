"""SCALE-Sim 3 compatible counts for dense GEMM layers on a systolic array (one serial kernel).

This is a peer-compatibility mode, not edgesim's own model (`hwmodels.kernels.macarray`): it
reproduces what SCALE-Sim 3.0 (scalesim-project/scale-sim-v3, scalesim/compute/
systolic_compute_{os,ws,is}.py and scalesim/memory/read_buffer_estimate_bw.py) reports, so
that edgesim's figures can be put next to SCALE-Sim's layer by layer. Words are SCALE-Sim's
words (one byte: `word_size = 1`).

Mapping (Sr, Sc, T): os (M, N, K), ws (K, N, M), is (K, M, N); folds fr = ceil(Sr / R),
fc = ceil(Sc / C), every fold padded to a full R x C tile.

- Compute cycles: the length of SCALE-Sim's demand matrices, fr * fc * (fill + T) with fill
  os R + C - 2 and ws/is 2R + C - 2. Partial sums are never split: SCALE-Sim's compute model
  keeps any number of them (edgesim's own model chunks the stream when they overflow the
  ofmap SRAM and pays a preload per chunk; that is the difference on ws/is).
- SRAM requests (the demand matrices' valid entries, `*_reads` / `ofmap_writes` there):
  os: ifmap fc*M*K, filter fr*K*N, ofmap M*N + fr*fc*(R + C) (SCALE-Sim 3 adds a padded
  tile's R + C per fold to its ofmap count);
  ws: ifmap fc*M*K, filter K*N, ofmap fr*M*N;
  is: ifmap K*M, filter fc*K*N, ofmap fr*M*N.
- DRAM reads: SCALE-Sim's estimate-bandwidth read buffer keeps recent misses in the active
  half of the SRAM. An operand whose distinct words fit that half is read once (the ifmap's
  distinct words are the ifmap itself, not its im2col copy, unless that copy is smaller, as
  for a strided 1x1 conv); otherwise it is read once per
  pass over it: os ifmap fc times, os filter fr times (one filter column block per fold),
  ws ifmap fc times, is filter fc times; ws filters and is ifmaps are never re-read. This is
  the steady state of SCALE-Sim's sliding window, not its exact set bookkeeping.
- DRAM writes: every ofmap word the demand matrices write, drained by SCALE-Sim's write
  buffer: os M*N (its extra R + C per fold is in the SRAM counter only), ws/is fr*M*N.
"""

from __future__ import annotations

import math

import numpy as np

from hwmodels.kernels.jit import njit
from hwmodels.kernels.macarray_folds import fold_fill, gemm_dims
from hwmodels.kernels.sparse import OS, WS

# Output columns of `counts`
CYCLES, SRAM_IFMAP, SRAM_FILTER, SRAM_OFMAP, DRAM_IFMAP, DRAM_FILTER, DRAM_OFMAP = range(7)
FIELDS = ("compute_cycles", "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes",
          "dram_ifmap_reads", "dram_filter_reads", "dram_ofmap_writes")


@njit(cache=True)
def folds(df: int, m: int, n: int, k: int, rows: int, cols: int) -> tuple[int, int, int]:
    """(fr, fc, T) of SCALE-Sim's mapping (`gemm_dims`)."""
    sr, sc, t = gemm_dims(df, m, n, k)
    return math.ceil(sr / rows), math.ceil(sc / cols), t


@njit(cache=True)
def sram_requests(df: int, m: int, n: int, k: int, fr: int, fc: int, rows: int,
                  cols: int) -> tuple[float, float, float]:
    """(ifmap reads, filter reads, ofmap writes) in words, as SCALE-Sim 3 counts them."""
    mk, kn, mn = float(m) * k, float(k) * n, float(m) * n
    if df == OS:
        return fc * mk, fr * kn, mn + fr * fc * (rows + cols)
    if df == WS:
        return fc * mk, kn, fr * mn
    return mk, fc * kn, fr * mn


@njit(cache=True)
def dram_reads(df: int, ifmap: float, filt: float, fr: int, fc: int, half_if: float,
               half_f: float) -> tuple[float, float]:
    """(ifmap, filter) DRAM reads in words: once if the distinct words fit the active half of
    their SRAM, else once per pass (module docstring)."""
    a_fits, w_fits = ifmap <= half_if, filt <= half_f
    if df == OS:
        return ifmap * (1.0 if a_fits else fc), filt * (1.0 if w_fits else fr)
    if df == WS:
        return ifmap * (1.0 if a_fits else fc), filt
    return ifmap, filt * (1.0 if w_fits else fc)


@njit(cache=True)
def counts(gemm: np.ndarray, df: int, rows: int, cols: int, sram: np.ndarray,
           out: np.ndarray) -> None:
    """Fill out[L, 7] (see FIELDS) for the layers gemm[L, 5] = (m, n, k, groups, ifmap words)
    on an R x C array with SRAMs of sram[3] bytes (ifmap, filter, ofmap); groups run one after
    another as separate GEMMs. A layer with m = 0 (not a GEMM) gets zeros."""
    fill = fold_fill(df, rows, cols)
    for li in range(gemm.shape[0]):
        m, n, k, g = gemm[li, 0], gemm[li, 1], gemm[li, 2], gemm[li, 3]
        if m <= 0 or g <= 0:
            out[li, :] = 0.0
            continue
        fr, fc, t = folds(df, m, n, k, rows, cols)
        out[li, CYCLES] = g * fr * fc * (fill + t)
        s_if, s_f, s_of = sram_requests(df, m, n, k, fr, fc, rows, cols)
        # distinct ifmap words: the ifmap, or its im2col copy if smaller (a strided 1x1 conv
        # never touches the skipped pixels)
        ifmap = min(gemm[li, 4] / g, float(m) * k)
        d_if, d_f = dram_reads(df, ifmap, float(k) * n, fr, fc, sram[0] / 2, sram[1] / 2)
        out[li, SRAM_IFMAP], out[li, SRAM_FILTER], out[li, SRAM_OFMAP] = g * s_if, g * s_f, \
            g * s_of
        d_of = float(m) * n if df == OS else s_of  # os's R + C per fold is a counter only
        out[li, DRAM_IFMAP], out[li, DRAM_FILTER], out[li, DRAM_OFMAP] = g * d_if, g * d_f, \
            g * d_of
