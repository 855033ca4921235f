"""SCALE-Sim-compatible mode of the dense MAC-array model: per-layer cycles and access counts.

edgesim's own MAC-array model (`hwmodels.macarray`) is the one every command uses; this mode
reproduces SCALE-Sim 3.0's accounting (see `hwmodels.kernels.scalesim` for the rules and what
differs) so that a layer's figures can be compared with SCALE-Sim's reports. Each result names
its model, so the two are never mixed up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.ir import CATEGORY_GEMM, LayerTable
from hwmodels.configs import DATAFLOWS
from hwmodels.kernels import scalesim as kernel

MODEL = "scalesim-3 compatible"
KIB = 1024  # SCALE-Sim's SRAM sizes are in kB of 1024 bytes


@dataclass(frozen=True, eq=False)  # holds arrays
class PeerCounts:
    """Per-layer figures of one model, in SCALE-Sim's units (cycles; one-byte words).

    Attributes:
        model: which model produced them (`MODEL`).
        layers: layer names.
        compute_cycles, sram_ifmap_reads, sram_filter_reads, sram_ofmap_writes,
        dram_ifmap_reads, dram_filter_reads, dram_ofmap_writes: float64 [L] each.
    """

    model: str
    layers: tuple[str, ...]
    compute_cycles: np.ndarray
    sram_ifmap_reads: np.ndarray
    sram_filter_reads: np.ndarray
    sram_ofmap_writes: np.ndarray
    dram_ifmap_reads: np.ndarray
    dram_filter_reads: np.ndarray
    dram_ofmap_writes: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer: name and every count (for JSON reports)."""
        return [{"layer": name, **{f: float(getattr(self, f)[i]) for f in kernel.FIELDS}}
                for i, name in enumerate(self.layers)]


def gemm_table(table: LayerTable) -> np.ndarray:
    """int64 [L, 5] (m, n, k, groups, ifmap words) of the GEMM layers; zeros for the others."""
    gemm = np.stack([table.m, table.n, table.k, table.groups, table.a_in_elems], axis=1)
    return np.where((table.category == CATEGORY_GEMM)[:, None], gemm, 0).astype(np.int64)


def counts(table: LayerTable, dataflow: str, rows: int, cols: int,
           sram_kib: tuple[float, float, float]) -> PeerCounts:
    """SCALE-Sim-compatible counts of every layer of `table`.

    Args:
        table: the model's layers (non-GEMM layers get zeros, as SCALE-Sim runs GEMMs only).
        dataflow: "os", "ws" or "is".
        rows, cols: array size.
        sram_kib: (ifmap, filter, ofmap) SRAM sizes in KiB (SCALE-Sim's `*SramSzkB`).

    Returns:
        The `PeerCounts`.
    """
    out = np.zeros((len(table), len(kernel.FIELDS)))
    kernel.counts(gemm_table(table), DATAFLOWS.index(dataflow), rows, cols,
                  np.asarray(sram_kib, dtype=np.float64) * KIB, out)
    return PeerCounts(MODEL, tuple(table.names), *out.T)
