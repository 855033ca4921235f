"""The bytes of a MAC-array layer: what crosses the DRAM link, what the SRAMs read and write,
and which weights stay on chip across inferences (the memory half of the MAC-array model;
`kernels.macarray_folds` times the compute, `kernels.macarray` assembles the layers).

Formulas and their sources:
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
  stationary tile (extra fill cycles, see `kernels.macarray_folds.psum_chunks`). Traffic is
  SRAM energy + DRAM bytes.
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
"""

from __future__ import annotations

import numpy as np

from compiler.ir import CATEGORY_GEMM, CATEGORY_VIEW
from hwmodels.kernels.jit import njit
from hwmodels.kernels.macarray_layout import (
    G_CHUNKS,
    G_FC,
    G_FR,
    G_GROUPS,
    G_KNOWN,
    G_PSUM,
    G_RES_BITS,
    G_W_ACT,
)
from hwmodels.kernels.sparse import OS, WS


@njit(cache=True)
def stored_bytes(elems: float, bits: float, density: float, compressed: bool) -> float:
    """Bytes of an operand; compressed (bitmask + nonzeros) when the array skips its zeros."""
    dense = elems * bits / 8.0
    return min(dense, elems * (density * bits + 1.0) / 8.0) if compressed else dense


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
