"""MAC-array (systolic) accelerators: the target schema and the cost model's Python glue.

The arithmetic lives in `hwmodels.kernels.macarray` and the `macarray_folds` and
`macarray_traffic` kernels it calls (formulas and sources are listed there); this module
packs the layer table and the hardware configs into arrays, calls the kernel once, and wraps
the result in a `Cost`. This module must not import `hwmodels.target`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from compiler.ir import CATEGORY_GEMM, CATEGORY_VIEW, LayerTable
from hwmodels import configs as configs_mod
from hwmodels.configs import MacArrayConfigs
from hwmodels.cost import (
    Cost,
    Memoised,
    bits_key,
    check_bits,
    check_precisions,
    memoised,
    memory_bytes,
    shared_once,
)
from hwmodels.kernels import jit, threads
from hwmodels.kernels import macarray as kernel

# Output cells from which the threaded kernel pays: below, waking the pool costs more than the
# work (2 threads made single-design calls ~4x slower on a shared 2-core machine, issue 17)
PARALLEL_MIN = 1_000_000
_COST_FIELDS = ("cycles", "latency_s", "energy_pj_compute", "energy_pj_onchip",
                "energy_pj_dram", "bound", "util")


@dataclass(frozen=True)
class Precision:
    """One supported operand width of the array.

    Attributes:
        bits: operand width; 1-8 are integers, 16 = fp16, 32 = fp32.
        macs_per_pe_cycle: MACs one PE completes per cycle with both operands at this width.
        energy_pj_per_mac: energy of one such MAC; None = Horowitz (ISSCC 2014) scaled to the
            target's process node (see `hwmodels.energy.mac_pj`).
    """

    bits: Literal[1, 2, 3, 4, 5, 6, 7, 8, 16, 32]
    macs_per_pe_cycle: float
    energy_pj_per_mac: float | None = None


@dataclass(frozen=True, kw_only=True)
class MacArrayTarget(Memoised):
    """A rows x cols systolic array with per-operand SRAMs, a DRAM link and a vector unit.

    Units are in the field names: `_kib` kibibytes, `_gbps` gigabytes per second, `_ghz`
    gigahertz, `_nm` nanometres, `_pj_per_byte` picojoules per byte. Optional energies default
    to Horowitz (ISSCC 2014) scaled by `process_nm` (see `hwmodels.energy`).
    """

    name: str
    kind: Literal["macarray"] = "macarray"
    description: str
    sources: dict[str, str]
    rows: int
    cols: int
    dataflow: Literal["os", "ws", "is"]
    clock_ghz: float
    process_nm: float
    ifmap_sram_kib: float
    filter_sram_kib: float
    ofmap_sram_kib: float
    dram_bandwidth_gbps: float
    precisions: tuple[Precision, ...]
    precision_scaling: Literal["fused", "widest"] = "widest"
    double_buffered: bool = True
    vector_lanes: int | None = None  # None: one lane per column
    sparsity: Literal["none", "zero_gating", "skip_activations", "skip_weights", "skip_both",
                      "structured"] = "none"
    sparsity_n: int = 2  # structured N:M: N nonzeros kept in every M weights along K
    sparsity_m: int = 4
    # True: a layer's output stays in the on-chip buffers and the next layer reads it there
    # when it fits (SCNN's IARAM/OARAM swap roles between layers); False: every layer reads
    # its activations from DRAM and writes them back (SCALE-Sim's accounting)
    activations_on_chip: bool = False
    # True: consecutive folds overlap (double-buffered stationary/output registers, as the
    # TPU's weight tiles and Gemmini's c1/c2 PE registers): fill/drain shows once per layer
    # and a fold lasts max(work, rows); False: SCALE-Sim's back-to-back folds
    fold_pipelining: bool = False
    # True: in a stream of inferences, weights that fit the filter SRAM (whole model, at the
    # layer's width) stay there and are not fetched per inference (Edge TPU parameter
    # caching); False: every inference reads its weights from DRAM
    weights_resident: bool = False
    # True: a GEMM's epilogue (bias, scale, ReLU/clip: `compiler.ir.Graph.epilogues`) is
    # applied to its results as they drain from the accumulators (TPU v1's activation unit,
    # Gemmini's AccumulatorScale), costing no vector pass; False: a separate vector-unit pass
    fused_epilogue: bool = False
    # True (with fold_pipelining): the next layer's first stationary weight tile shifts in
    # under this layer's last fold (TPU v1's Weight FIFO and double-buffered tile; weights do
    # not depend on activations): ws saves R fill cycles per layer; os and is unchanged
    weight_preload: bool = False
    sram_energy_pj_per_byte: float | None = None
    dram_energy_pj_per_byte: float | None = None

    def __post_init__(self) -> None:
        # cross-field rules; the loader reports "<field>: <what>" against the file
        check_precisions([p.bits for p in self.precisions])
        if self.sparsity_n >= self.sparsity_m:
            raise ValueError(f"sparsity_n: must be < sparsity_m ({self.sparsity_m}), "
                             f"got {self.sparsity_n}")

    @functools.cached_property
    def kernel_configs(self) -> MacArrayConfigs:
        """This target as the kernel's one-config arrays, built once per target (its fields
        are frozen, so the arrays cannot go stale); a cost call then skips ~0.7 ms of glue."""
        return configs_mod.from_targets([self])

    def kernel_rates(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`configs.precision_rates` of this target at `bits` (int64 [B, 2]), memoised per
        bit choices on the target (a pure function of its frozen fields and `bits`)."""
        return memoised(self.memo, ("rates", bits_key(bits)),
                        lambda: configs_mod.precision_rates(self.kernel_configs, bits))

    @property
    def peak_macs_per_s(self) -> float:
        """Peak MAC rate at the array's fastest precision."""
        best = max(p.macs_per_pe_cycle for p in self.precisions)
        return self.rows * self.cols * best * self.clock_ghz * 1e9


WEIGHT_WIDTHS = (32, 16, 8, 7, 6, 5, 4, 3, 2, 1)


def resident_bits(table: LayerTable, target: MacArrayTarget) -> int:
    """The widest weight width at which `target` keeps the model's weights on chip across
    inferences (the kernel's residency test, `kernels.macarray_traffic.model_weights`: every
    GEMM weight at that width plus the vector unit's parameters fit the usable filter SRAM); 0 if
    none or disabled."""
    if not target.weights_resident:
        return 0
    gemm = table.category == CATEGORY_GEMM
    vec = float(table.w_bytes[~gemm & (table.category != CATEGORY_VIEW)].sum())
    usable = target.filter_sram_kib * 1024.0 * (0.5 if target.double_buffered else 1.0)
    elems, room = float(table.w_elems[gemm].sum()), usable - vec
    if room < 0:
        return 0
    widest = np.inf if elems == 0 else room * 8.0 / elems  # the kernel's arithmetic
    return next((w for w in WEIGHT_WIDTHS if w <= widest), 0)


def weight_regime(table: LayerTable, target: MacArrayTarget) -> str:
    """One line saying where the weights come from in the latency `evaluate` reports."""
    if not target.weights_resident:
        return "weights read from DRAM every inference (weights_resident: false)"
    w = resident_bits(table, target)
    if w == 0:
        return ("weights read from DRAM every inference: the model does not fit the filter "
                "SRAM at any width (weights_resident: true)")
    which = "all weights stay" if w == 32 else f"layers with weights of <= {w} bits stay"
    return (f"steady state of a stream: {which} in the filter SRAM across inferences (the "
            "first inference loads them once, not counted); wider layers are read from DRAM "
            "every inference")


def epilogue_columns(table: LayerTable) -> tuple[np.ndarray, np.ndarray]:
    """(1 where a layer is a GEMM's epilogue, per GEMM the parameter bytes of its epilogues):
    from `LayerTable.epilogue_of`; all 0 where the table does not carry it."""
    of = np.full(len(table), -1, np.int64) if table.epilogue_of is None else table.epilogue_of
    fused = of >= 0
    params = np.zeros(len(table), np.int64)
    np.add.at(params, of[fused], table.w_bytes[fused])
    return fused.astype(np.int64), params


def layer_arrays(table: LayerTable) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's layer inputs: int64 [L, 13] and float64 [L, 2] (see the kernel)."""
    epi, params = epilogue_columns(table)
    ints = np.stack([table.category, table.m, table.n, table.k, table.groups, table.macs,
                     table.w_elems, table.a_in_elems, table.a_out_elems, table.ops,
                     table.w_bytes, epi, params], axis=1) if len(table) else np.zeros((0, 13))
    floats = np.stack([table.w_density, table.a_density], axis=1) if len(table) \
        else np.zeros((0, 2))
    return (np.ascontiguousarray(ints, dtype=np.int64),
            np.ascontiguousarray(floats, dtype=np.float64))


def evaluate_configs(table: LayerTable, bits: np.ndarray, cfg: MacArrayConfigs,
                     rates: tuple[np.ndarray, np.ndarray] | None = None, *,
                     engine: str | None = None) -> Cost:
    """Cost of every layer under every bit choice on every config: one kernel call.

    Args:
        table: the model's layers.
        bits: int [B, 2] (w_bits, a_bits).
        cfg: H configs (`hwmodels.configs.from_targets`).
        rates: `configs.precision_rates(cfg, bits)` if already known.
        engine: "python" or "numba" (`kernels.jit`; None: picked by the work).

    Returns:
        A `Cost` of [H, L, B] arrays.
    """
    bits = check_bits(bits)
    lay_i, lay_f = layer_arrays(table)
    rate_table, energies = configs_mod.precision_rates(cfg, bits) if rates is None else rates
    out = np.empty((7, len(cfg), len(table), len(bits)))
    run_kernel(out, engine)(lay_i, lay_f, bits[:, 0].astype(np.float64),
                            bits[:, 1].astype(np.float64), cfg.cfg_i, cfg.cfg_f, rate_table,
                            energies, out)
    weight, act = memory_bytes(table, bits)
    weight, shape = shared_once(table, weight), out.shape[1:]  # a shared weight stored once
    return Cost(**dict(zip(_COST_FIELDS, out)), weight_bytes=np.broadcast_to(weight, shape),
                act_bytes=np.broadcast_to(act, shape))


def run_kernel(out: np.ndarray, engine: str | None = None) -> Callable[..., None]:
    """The kernel that fills `out` [7, H, L, B]: in Python for small work (`kernels.jit`),
    else compiled, on numba's threads when the call is large enough to pay for them."""
    if jit.engine(out[0].size, engine) == "python":
        return jit.python(kernel.evaluate_serial)
    parallel = out.size >= PARALLEL_MIN and threads.available() > 1
    return jit.compiled(kernel.evaluate if parallel else kernel.evaluate_serial)


def evaluate(table: LayerTable, bits: np.ndarray, target: MacArrayTarget, *,
             threads: int | None = None, runtime: str = "onnxruntime") -> Cost:
    """Cost of every layer under every bit choice on one MAC array: [L, B] arrays.

    `threads` and `runtime` describe a host CPU and do not affect an accelerator; they are
    accepted so that `hwmodels.cost.evaluate` can pass them to every model.
    """
    from hwmodels import prepared  # lazy: it imports this module

    # a prepared call, memoised on the table per target and bits: evaluate_configs' kernel
    # and arrays, less its glue
    bits = check_bits(bits)
    key = ("macarray.call", target.token, bits_key(bits))
    return prepared.run(memoised(table.memo, key, lambda: prepared.prepare(table, bits, target)))
