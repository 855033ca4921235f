"""Sparsity-aware compute cycles of one GEMM on a MAC array: exact and statistical.

- `data_driven_cycles`: from the GEMM's actual operand masks (a_mask [m, k], w_mask [k, n]);
  every fold's busiest PE is counted, so load imbalance shows.
- `expected_cycles`: from densities, the expectation under i.i.d. Bernoulli masks (exact
  order statistics of binomials; see `hwmodels.kernels.sparse` for the one approximation).
- `lane_cycles`: from per-lane densities (output stationary).
`expected_terms` and `lane_terms` split the statistical models' cycles by cause
(`CycleTerms`: fill, tile-swap waits, work).

Both model one group of out[m, n] += a[m, k] @ w[k, n] with the target's dataflow and sparsity
mode; `zero_gating` saves energy only, so its cycles are the dense ones. Structured N:M
compresses K to ceil(K * N / M) when the weights satisfy the pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwmodels import configs
from hwmodels.kernels import macarray_folds as mk
from hwmodels.kernels import sparse as sk
from hwmodels.macarray import MacArrayTarget


def _codes(target: MacArrayTarget) -> tuple[int, int]:
    return (configs.DATAFLOWS.index(target.dataflow),
            configs.SPARSITY_MODES.index(target.sparsity))


def pe_rate(target: MacArrayTarget, bits: tuple[int, int]) -> float:
    """MACs per PE per cycle at (w_bits, a_bits); raises ValueError if unsupported."""
    rate, _ = configs.pair_rates(configs.from_targets([target]), np.array([bits[0]]),
                                 np.array([bits[1]]))
    if rate[0, 0] <= 0:
        raise ValueError(f"{target.name}: precision W{bits[0]}A{bits[1]} is not supported")
    return float(rate[0, 0])


def fold_schedule(target: MacArrayTarget) -> tuple[int, int, int, bool]:
    """(fill/drain per fold, least cycles per fold, fill/drain once per layer, whether the
    layer's last fold is free of that least) on `target`
    (`hwmodels.kernels.macarray_folds.fold_schedule`)."""
    df, _ = _codes(target)
    return mk.fold_schedule(df, target.rows, target.cols, target.fold_pipelining,
                            target.weight_preload)


def is_n_of_m(w_mask: np.ndarray, n: int, m: int) -> bool:
    """True if every run of m consecutive weights along K (from row 0) holds <= n nonzeros."""
    k = w_mask.shape[0]
    padded = np.zeros((math.ceil(k / m) * m, w_mask.shape[1]), dtype=bool)
    padded[:k] = w_mask
    return bool((padded.reshape(-1, m, w_mask.shape[1]).sum(axis=1) <= n).all())


def data_driven_cycles(a_mask: np.ndarray, w_mask: np.ndarray, target: MacArrayTarget,
                       bits: tuple[int, int] = (8, 8), first: bool = True,
                       last: bool = True) -> float:
    """Exact compute cycles of one GEMM group from its nonzero masks.

    Args:
        a_mask: bool [m, k], True where the activation is nonzero.
        w_mask: bool [k, n], True where the weight is nonzero.
        target: the array (rows, cols, dataflow, sparsity mode).
        bits: (w_bits, a_bits) of the operands.
        first, last: this group starts / ends its layer. With pipelined folds the layer's
            groups follow each other like folds: only the first shows the fill/drain, and
            only the last one's final fold waits for no next tile.

    Raises:
        ValueError: mismatched shapes, unsupported precision, or (structured mode) weights
            that break the N:M pattern.
    """
    a_mask, w_mask = np.asarray(a_mask, dtype=bool), np.asarray(w_mask, dtype=bool)
    if a_mask.ndim != 2 or w_mask.ndim != 2 or a_mask.shape[1] != w_mask.shape[0]:
        raise ValueError(f"masks must be [m, k] and [k, n], got {a_mask.shape}, {w_mask.shape}")
    df, mode = _codes(target)
    rate = pe_rate(target, bits)
    fill, floor, once, last_free = fold_schedule(target)
    once = once if first else 0
    if mode == sk.STRUCTURED:
        return once + _structured_cycles(a_mask, w_mask, target, rate, last and last_free)
    return once + float(sk.data_driven_cycles(df, mode, a_mask, w_mask, target.rows,
                                              target.cols, fill, rate, floor,
                                              last and last_free))


def _structured_cycles(a_mask: np.ndarray, w_mask: np.ndarray, target: MacArrayTarget,
                       rate: float, last: bool) -> float:
    n, m = target.sparsity_n, target.sparsity_m
    if not is_n_of_m(w_mask, n, m):
        raise ValueError(f"{target.name}: weights are not {n}:{m} structured along K")
    k2 = math.ceil(a_mask.shape[1] * n / m)  # the compressed K the array streams
    dense = np.ones((a_mask.shape[0], k2), dtype=bool), np.ones((k2, w_mask.shape[1]), bool)
    df = configs.DATAFLOWS.index(target.dataflow)
    fill, floor, _, _ = fold_schedule(target)
    return float(sk.data_driven_cycles(df, sk.NONE, *dense, target.rows, target.cols, fill,
                                       rate, floor, last))


@dataclass(frozen=True)
class CycleTerms:
    """Compute cycles of a GEMM split by cause; `total` is the model's cycles.

    Attributes:
        fill: skew, fill and drain: once per layer, plus per fold when folds run back to back.
        swap: pipelined folds waiting for the R-deep tile swap (their work is shorter than R).
        work: busiest-PE effectual streaming, at the precision's MACs per PE per cycle.
    """

    fill: float
    swap: float
    work: float

    @property
    def total(self) -> float:
        """fill + swap + work."""
        return self.fill + self.swap + self.work


def expected_terms(m: int, n: int, k: int, a_density: float, w_density: float,
                   target: MacArrayTarget, bits: tuple[int, int] = (8, 8), first: bool = True,
                   last: bool = True) -> CycleTerms:
    """`expected_cycles` split by cause (`CycleTerms`)."""
    df, mode = _codes(target)
    rate = pe_rate(target, bits)
    structured = mode == sk.STRUCTURED and w_density <= target.sparsity_n / target.sparsity_m
    k2 = math.ceil(k * target.sparsity_n / target.sparsity_m) if structured else k
    sr, sc, t = mk.gemm_dims(df, m, n, k2)
    folds = math.ceil(sr / target.rows) * math.ceil(sc / target.cols)
    fill, floor, once, last_free = fold_schedule(target)
    args = (df, mode, sr, sc, t, target.rows, target.cols, rate, a_density, w_density)
    work = mk.stream_cycles(*args, 0.0, True)
    stream = mk.stream_cycles(*args, floor, last and last_free)
    return CycleTerms(float(folds * fill + (once if first else 0)), stream - work, work)


def expected_cycles(m: int, n: int, k: int, a_density: float, w_density: float,
                    target: MacArrayTarget, bits: tuple[int, int] = (8, 8), first: bool = True,
                    last: bool = True) -> float:
    """Expected compute cycles of one GEMM group under i.i.d. Bernoulli operand masks.

    Structured N:M applies when `w_density <= N / M` (the weights were pruned to the pattern).
    `first`, `last`: as in `data_driven_cycles`.
    """
    return expected_terms(m, n, k, a_density, w_density, target, bits, first, last).total


def lane_terms(lane_density: np.ndarray, col_nnz: np.ndarray, k: int, target: MacArrayTarget,
               bits: tuple[int, int] = (8, 8)) -> CycleTerms:
    """`lane_cycles` split by cause (`CycleTerms`); arguments and errors as there."""
    lanes, cols = np.atleast_2d(lane_density), np.atleast_2d(col_nnz)
    if target.dataflow != "os":
        raise ValueError(f"{target.name}: per-lane statistics model output stationary only")
    _, mode = _codes(target)
    if mode == sk.STRUCTURED:
        parts = [expected_terms(lanes.shape[1], cols.shape[1], k, 1.0, float(c.mean()) / k,
                                target, bits, g == 0, g == len(cols) - 1)
                 for g, c in enumerate(cols)]
        return CycleTerms(*(sum(getattr(p, f) for p in parts) for f in ("fill", "swap", "work")))
    fill, floor, once, last_free = fold_schedule(target)
    folds = len(lanes) * math.ceil(lanes.shape[1] / target.rows) * math.ceil(
        cols.shape[1] / target.cols)
    work = _lane_stream(lanes, cols, k, target, bits, 0.0, True)
    stream = _lane_stream(lanes, cols, k, target, bits, floor, last_free)
    return CycleTerms(float(once + folds * fill), stream - work, work)


def _lane_stream(lanes: np.ndarray, cols: np.ndarray, k: int, target: MacArrayTarget,
                 bits: tuple[int, int], floor: float, last_free: bool) -> float:
    # streaming cycles over the groups, a fold lasting at least `floor` (the last one of the
    # layer too unless `last_free`); fills are counted by the caller
    _, mode = _codes(target)
    rate, last = pe_rate(target, bits), len(lanes) - 1
    return float(sum(sk.lane_cycles(mode, np.ascontiguousarray(p, dtype=np.float64),
                                    np.ascontiguousarray(c, dtype=np.int64), k, target.rows,
                                    target.cols, 0, rate, floor, g == last and last_free)
                     for g, (p, c) in enumerate(zip(lanes, cols))))


def lane_cycles(lane_density: np.ndarray, col_nnz: np.ndarray, k: int, target: MacArrayTarget,
                bits: tuple[int, int] = (8, 8)) -> float:
    """Expected compute cycles of a GEMM from per-lane statistics, summed over its groups.

    The lanes of each fold are the rows of the activation operand that fold holds, so the
    per-tile distribution of densities (not only their mean) sets each fold's busiest PE
    (`hwmodels.kernels.sparse.lane_tile_work`).

    Args:
        lane_density: float [G, m], nonzero fraction of each activation row.
        col_nnz: int [G, n], nonzero weights per output column (out of `k`).
        k: the reduction length.
        target: an output-stationary array; structured N:M streams the compressed K densely.
        bits: (w_bits, a_bits).

    Raises:
        ValueError: for a weight- or input-stationary array, or an unsupported precision.
    """
    return lane_terms(lane_density, col_nnz, k, target, bits).total
