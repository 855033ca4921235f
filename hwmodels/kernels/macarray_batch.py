"""The MAC-array cost of a sweep batch: designs x layers, each layer at its one chosen bit choice.

`kernels.macarray.evaluate` costs every layer under every bit choice ([7, H, L, B]); a sweep
then keeps one column per layer and design. This kernel evaluates only that column and writes
[7, H, L] directly, so nothing is computed, stored or gathered for the columns not kept. The
per-layer arithmetic is `kernels.macarray`'s own (`layer_setup`, `layer_at`): a change to the
model there flows in here, and the tests check the two kernels agree exactly.

Those functions are compiled again here from the same Python source, to be inlined (numba IR
inlining) into this kernel with everything they call in the MAC-array model's modules
(`kernels.macarray`, `kernels.macarray_folds`, `kernels.macarray_traffic`, `kernels.arith`):
a numba call that is not inlined passes each array argument with a reference count, and
inlined the kernel ran 2.3x faster per evaluation (bench/bench_sweep.py), with bit-identical
results. As with any numba cache, this module's cached kernel does not notice edits to those
modules alone (numba checks only the caller's file); the tests, run on a fresh checkout, do.

Inlining still binds every array argument of an inlined call to a new variable, which numba
reference-counts; the kernel reads its arrays through `kernels.views.borrowed` views, which it
does not: same arithmetic, bit-identical results, 2.1x fewer CPU seconds per evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from compiler.numba_cache import njit
from hwmodels.kernels import arith, jit, macarray_folds, macarray_traffic
from hwmodels.kernels import macarray as kernel
from hwmodels.kernels.macarray_layout import G_SIZE
from hwmodels.kernels.views import borrowed


def inlined_namespace(modules: tuple[Any, ...]) -> dict[str, Any]:
    """The first of `modules`' globals, with each kernel defined in `modules` compiled again
    from the same code as an always-inlined function that resolves its callees among those
    (so they are inlined too). numba compiles lazily: only what a kernel here calls is
    compiled."""
    return jit.rebind_own(modules, njit(inline="always"))


_INLINED = inlined_namespace((kernel, macarray_folds, macarray_traffic, arith))
layer_setup, layer_at = _INLINED["layer_setup"], _INLINED["layer_at"]


@njit(cache=True)
def design_rows(h: int, lay_i: np.ndarray, lay_f: np.ndarray, w_bits: np.ndarray,
                a_bits: np.ndarray, cols: np.ndarray, cfg_i: np.ndarray, cfg_f: np.ndarray,
                rates: np.ndarray, energies: np.ndarray, out: np.ndarray) -> None:
    """Fill out[:, h] for design h at its columns (row h of cols, or row 0 if shared)."""
    scratch = np.zeros(5 + 7 + G_SIZE)  # raw, res, geo; held here while their views work
    raw, res, geo = (borrowed(scratch[:5]), borrowed(scratch[5:12]),
                     borrowed(scratch[12:]))
    hi, hf = borrowed(cfg_i[h]), borrowed(cfg_f[h])
    lay_i, lay_f = borrowed(lay_i), borrowed(lay_f)
    # np.int64: prange's index is unsigned, and unsigned vs 0 would type `row` as a float
    row = np.int64(h) if cols.shape[0] > 1 else np.int64(0)
    for li in range(lay_i.shape[0]):
        pick = layer_setup(lay_i, lay_f, li, hi, hf, geo)
        b = cols[row, li]
        layer_at(lay_i, lay_f, li, geo, pick, w_bits[b], a_bits[b], rates[pick, h, b],
                 energies[pick, h, b], hi, hf, raw, res)
        for q in range(7):
            out[q, h, li] = res[q]


@njit(cache=True)
def evaluate_picked_serial(lay_i: np.ndarray, lay_f: np.ndarray, w_bits: np.ndarray,
                           a_bits: np.ndarray, cols: np.ndarray, cfg_i: np.ndarray,
                           cfg_f: np.ndarray, rates: np.ndarray, energies: np.ndarray,
                           out: np.ndarray) -> None:
    """Fill out[7, H, L]: layer l of design h at bit choice cols[h, l] (cols [H, L], or [1, L]
    for every design alike); other arguments as `kernels.macarray.evaluate`. One thread."""
    for h in range(out.shape[1]):
        design_rows(h, lay_i, lay_f, w_bits, a_bits, cols, cfg_i, cfg_f, rates, energies, out)


@njit(cache=True, parallel=True)
def evaluate_picked(lay_i: np.ndarray, lay_f: np.ndarray, w_bits: np.ndarray,
                    a_bits: np.ndarray, cols: np.ndarray, cfg_i: np.ndarray, cfg_f: np.ndarray,
                    rates: np.ndarray, energies: np.ndarray, out: np.ndarray) -> None:
    """`evaluate_picked_serial` with designs in parallel (for calls large enough to pay)."""
    for h in prange(out.shape[1]):
        design_rows(h, lay_i, lay_f, w_bits, a_bits, cols, cfg_i, cfg_f, rates, energies, out)
