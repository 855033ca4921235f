"""Non-dominated sets: a generic filter for sweeps and the front-merge kernels of the allocator.

`non_dominated` marks the Pareto-optimal rows of a point cloud (every objective minimised unless
told otherwise): O(n log n) by one sort for two objectives, and for more a numba archive scan that
compares each point only with the non-dominated points found so far, O(n * front * d).

`add_layer` is the hot step of the multiple-choice-knapsack front (compiler/allocate.py): it
combines a front of partial assignments, sorted by cost with strictly falling sensitivity, with
one layer's choices, keeping only non-dominated (cost, sens) pairs and a back-pointer for each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.numba_cache import njit

_SIGN = {"min": 1.0, "max": -1.0}


def non_dominated(points: np.ndarray, senses: Sequence[str] | None = None) -> np.ndarray:
    """Mark the points that no other point dominates.

    Point j dominates point i when j is no worse in every objective and better in at least one,
    so exact duplicates of a non-dominated point are all kept.

    Args:
        points: float [n, d], one row per point.
        senses: per objective "min" or "max"; default minimises all of them.

    Returns:
        bool [n], True where the point is non-dominated.

    Raises:
        ModelError: `points` is not 2-D, holds NaN, or `senses` has the wrong length or a word
            other than "min"/"max".
    """
    p = _oriented(np.asarray(points, dtype=np.float64), senses)
    if p.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    if p.shape[1] == 1:
        return p[:, 0] == p[:, 0].min()
    if p.shape[1] == 2:
        return _non_dominated_2d(p)
    return _non_dominated_archive(p)


def _oriented(p: np.ndarray, senses: Sequence[str] | None) -> np.ndarray:
    """Validate and flip maximised objectives so every column is minimised."""
    if p.ndim != 2 or p.shape[1] == 0:
        raise ModelError("points", f"expected a float array [n, d] with d >= 1, got {p.shape}")
    if np.isnan(p).any():
        raise ModelError("points", "NaN in the objectives")
    senses = ["min"] * p.shape[1] if senses is None else list(senses)
    bad = [s for s in senses if s not in _SIGN]
    if len(senses) != p.shape[1] or bad:
        raise ModelError("senses", f"need {p.shape[1]} of 'min'/'max', got {senses}")
    return p * np.array([_SIGN[s] for s in senses])


def _non_dominated_2d(p: np.ndarray) -> np.ndarray:
    """Two objectives: after a lexicographic sort, a point is dominated exactly when an earlier,
    distinct point has a second objective no larger."""
    order = np.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    new_group = np.ones(len(x), dtype=bool)
    new_group[1:] = (x[1:] != x[:-1]) | (y[1:] != y[:-1])
    # Minimum of y over all points strictly before each point's group of duplicates.
    before = np.concatenate(([np.inf], np.minimum.accumulate(y)[:-1]))
    first = np.maximum.accumulate(np.where(new_group, np.arange(len(x)), 0))
    mask = np.empty(len(x), dtype=bool)
    mask[order] = y < before[first]
    return mask


def _non_dominated_archive(p: np.ndarray) -> np.ndarray:
    """Any number of objectives: visit points by coordinate sum (ties lexicographic), so every
    dominator of a point is visited before it; compare only with the archive of winners."""
    keys = [p[:, j] for j in range(p.shape[1] - 1, -1, -1)] + [p.sum(axis=1)]
    order = np.lexsort(keys)
    return _archive_scan(np.ascontiguousarray(p[order]), order)


@njit(cache=True)
def _archive_scan(p: np.ndarray, order: np.ndarray) -> np.ndarray:
    n, d = p.shape
    archive = np.empty(n, dtype=np.int64)
    size = 0
    mask = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        dominated = False
        for a in range(size):
            j = archive[a]
            no_worse, better = True, False
            for k in range(d):
                if p[j, k] > p[i, k]:
                    no_worse = False
                    break
                if p[j, k] < p[i, k]:
                    better = True
            if no_worse and better:
                dominated = True
                break
        if not dominated:
            archive[size] = i
            size += 1
            mask[order[i]] = True
    return mask


@njit(cache=True)
def add_layer(c: np.ndarray, s: np.ndarray, layer_cost: np.ndarray, layer_sens: np.ndarray,
              layer_choice: np.ndarray, limit: float) -> tuple[np.ndarray, ...]:
    """Extend a front of partial assignments by one layer.

    A K-way merge of the K shifted copies of the front (one per choice), each already sorted by
    cost with falling sens, walked in (cost, sens) order: a candidate survives only if its sens
    beats every candidate before it. Candidates that cannot survive are skipped without being
    compared, so the work is about F*K reads plus K compares per survivor. Exact (cost, sens)
    ties keep the earlier choice.

    Args:
        c, s: float [F], the front sorted by cost with strictly falling sens.
        layer_cost, layer_sens: float [K], the layer's candidate choices.
        layer_choice: int8 [K], each candidate's column index in the caller's [L, B] arrays.
        limit: stop at points whose cost exceeds this (np.inf keeps all).

    Returns:
        (c, s, parent, choice): the new front, and per point the index of the partial
        assignment it extends and the column chosen for this layer.
    """
    f, kn = c.size, layer_cost.size
    out_c, out_s = np.empty(f * kn), np.empty(f * kn)
    parent, choice = np.empty(f * kn, dtype=np.int32), np.empty(f * kn, dtype=np.int8)
    head = np.zeros(kn, dtype=np.int64)
    best, n = np.inf, 0
    while True:
        pick, pc, ps = -1, 0.0, 0.0
        for k in range(kn):
            h = head[k]
            while h < f and s[h] + layer_sens[k] >= best:  # dominated by the last survivor
                h += 1
            head[k] = h
            if h < f:
                ck, sk = c[h] + layer_cost[k], s[h] + layer_sens[k]
                if pick < 0 or ck < pc or (ck == pc and sk < ps):
                    pick, pc, ps = k, ck, sk
        if pick < 0 or pc > limit:
            break
        out_c[n], out_s[n], parent[n], choice[n] = pc, ps, head[pick], layer_choice[pick]
        best, n = ps, n + 1
        head[pick] += 1
    # Copies, so the back-pointers kept per layer do not pin the F*K scratch buffers.
    return out_c[:n].copy(), out_s[:n].copy(), parent[:n].copy(), choice[:n].copy()
