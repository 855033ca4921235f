"""Edge CPUs (Arm / x86): the cost model's Python glue.

The arithmetic lives in `hwmodels.kernels.cpu` (formulas and sources are listed there). This
module resolves a `CpuTarget` into the kernel's arrays, calls the kernel once, and wraps the
result in a `Cost`; the arrays come from one module per job, whose public names are
re-exported here:
- `hwmodels.cpu_schema`: the target schema (`CpuTarget`, `CacheLevel`, `Dram`, `Power`);
- `hwmodels.cpu_rates`: per-core MAC rates and the path table (one row per kernel path: its
  MAC rate from the pipes and ISA, and the passes it adds);
- `hwmodels.cpu_params`: scalar parameters (clock, threads, DRAM roofs, overheads), cache
  levels, the layer array;
- `hwmodels.cpu_choice`: which kernel path each layer takes, and the weight bytes.
What it derives is memoised: per target on `CpuTarget.memo`, per table and bit-choice set on
`LayerTable.memo` (`kernel_inputs`). It must not import `hwmodels.target`.

Runtimes: `"onnxruntime"` models the kernels onnxruntime 1.31 takes for each emitted format;
`"ideal"` the best kernel the ISA allows (headroom); `"ncnn"` Tencent ncnn's Arm kernels
(fp16 storage and arithmetic on cores with fp16 arithmetic, Winograd F(6,3) / F(4,3) / F(2,3)
for 3x3 stride-1 convs, int8 models on its int8 kernels, each conv requantising to int8 or
dequantising to float by its neighbours, `hwmodels.ncnn_int8`);
`"xnnpack"` XNNPACK as TensorFlow Lite's CPU delegate runs a model (indirect convolution:
no im2col buffer, Dukhan 2019; fp32 graphs in fp32; int8 graphs end to end in int8 with
requantisation fused, no Q / DQ nodes; no Winograd).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.ir import LayerTable
from hwmodels import ort_layout
from hwmodels.cost import Cost, bits_key, check_bits, held_once, memoised, memory_bytes
from hwmodels.cpu_choice import LUT_MAX_M as LUT_MAX_M
from hwmodels.cpu_choice import ROW_PATH as ROW_PATH
from hwmodels.cpu_choice import container as container
from hwmodels.cpu_choice import emitted_weight_bytes as emitted_weight_bytes
from hwmodels.cpu_choice import format_codes as format_codes
from hwmodels.cpu_choice import format_policy as format_policy
from hwmodels.cpu_choice import fused_activations as fused_activations
from hwmodels.cpu_choice import kernel_paths as kernel_paths
from hwmodels.cpu_choice import layer_choices as layer_choices
from hwmodels.cpu_choice import planned_table as planned_table
from hwmodels.cpu_choice import weight_store_bytes as weight_store_bytes
from hwmodels.cpu_choice import weights_resident as weights_resident
from hwmodels.cpu_params import cache_rows as cache_rows
from hwmodels.cpu_params import latency_bound_bpc as latency_bound_bpc
from hwmodels.cpu_params import layer_array as layer_array
from hwmodels.cpu_params import params_row as params_row
from hwmodels.cpu_params import resolve_threads as resolve_threads
from hwmodels.cpu_rates import DOT_FEATURES as DOT_FEATURES
from hwmodels.cpu_rates import DOT_K_ALIGN as DOT_K_ALIGN
from hwmodels.cpu_rates import conv_integer_row as conv_integer_row
from hwmodels.cpu_rates import nbits_int8_available as nbits_int8_available
from hwmodels.cpu_rates import path_table as path_table
from hwmodels.cpu_rates import peak_macs_per_cycle as peak_macs_per_cycle
from hwmodels.cpu_schema import ISA_FEATURES as ISA_FEATURES
from hwmodels.cpu_schema import CacheLevel as CacheLevel
from hwmodels.cpu_schema import CpuTarget as CpuTarget
from hwmodels.cpu_schema import Dram as Dram
from hwmodels.cpu_schema import Power as Power
from hwmodels.kernels import cpu as kernel
from hwmodels.kernels import cpu_inserted, jit
from hwmodels.kernels import cpu_layout as K  # the kernel's array layout and path codes

RUNTIMES = {"onnxruntime": K.RUNTIME_ORT, "ideal": K.RUNTIME_IDEAL, "ncnn": K.RUNTIME_NCNN,
            "xnnpack": K.RUNTIME_XNNPACK}
# older releases a published measurement ran, accepted by `evaluate` but not offered for
# comparison: ncnn before 20230517 lacks the Cortex-A53 fp32 kernels
# (`cpu_ncnn.a53_fp32_load_share`)
LEGACY_RUNTIMES = {"ncnn-2022": K.RUNTIME_NCNN}


def _runtime_code(runtime: str) -> int:
    if runtime in LEGACY_RUNTIMES:
        return LEGACY_RUNTIMES[runtime]
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {sorted(RUNTIMES)}, got {runtime!r}")
    return RUNTIMES[runtime]



@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays
class KernelInputs:
    """Everything the CPU kernel reads for one network, H configs and B bit choices
    (`kernels.cpu.evaluate`'s arguments), and the activation bytes the `Cost` carries."""

    lay: np.ndarray
    per_bit: np.ndarray
    resident: np.ndarray
    choice: np.ndarray
    params: np.ndarray
    caches: np.ndarray
    paths: np.ndarray
    runtime: int
    act_bytes: np.ndarray
    weight_bytes: np.ndarray  # [H, L, B] as emitted (onnxruntime), NaN: the kernel's figure
    # [H, L, B, NI] copies onnxruntime inserts between layouts (hwmodels.ort_layout); None
    # for other runtimes
    inserted: np.ndarray | None = None


def kernel_inputs(table: LayerTable, bits: np.ndarray, targets: Sequence[CpuTarget], *,
                  threads: int | None = None, runtime: str = "onnxruntime") -> KernelInputs:
    """Resolve the layers, bit choices and H CPU configs into the kernel's arrays (the glue of
    `evaluate_configs`; `hwmodels.prepared_cpu` keeps the result for repeated calls).

    What depends on the table alone, or on the table and the bits, is memoised on the table
    (`LayerTable.memo`), what depends on a target alone on the target (`CpuTarget.memo`), so a
    repeated call only looks them up; the arrays may be shared with those memos: read them only.
    """
    bits, code = check_bits(bits), _runtime_code(runtime)
    a53 = runtime not in LEGACY_RUNTIMES
    per_bit, store, act = memoised(table.memo, ("cpu.bits", code, bits_key(bits)),
                                   lambda: _bit_columns(table, bits, code))
    each = [_target_columns(table, bits, t, code, store) for t in targets]
    return KernelInputs(memoised(table.memo, "cpu.layer_array", lambda: layer_array(table)),
                        per_bit, _stack([e[0] for e in each]), _stack([e[1] for e in each]),
                        _stack([_params(t, threads) for t in targets]),
                        _stack([_caches(t) for t in targets]),
                        _stack([_paths(t, code, a53) for t in targets]), code, act,
                        _stack([e[2] for e in each]),
                        _stack([e[3] for e in each if e[3] is not None])
                        if code == K.RUNTIME_ORT else None)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    # one config (every plain cost call): a view, not np.stack's copy
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def _bit_columns(table: LayerTable, bits: np.ndarray,
                 runtime: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's per-bit columns [B, 3], stored bytes per weight [B], activation bytes."""
    store, act = weight_store_bytes(bits[:, 0], runtime), memory_bytes(table, bits)[1]
    per_bit = np.column_stack([bits.astype(np.float64), store])
    # the kernel reads per_bit (numba compiles read-only arrays as another type); `Cost`s
    # hand act to callers: read-only, so no caller can change the memo's copy
    store.flags.writeable = act.flags.writeable = False
    return per_bit, store, act


def _target_columns(table: LayerTable, bits: np.ndarray, target: CpuTarget, runtime: int,
                    store: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray | None]:
    """`weights_resident` as float64 [B], `layer_choices` as int64 [L, B], the emitted
    weight bytes [L, B] (`emitted_weight_bytes`; NaN off onnxruntime) and onnxruntime's
    inserted reorders / transposes [L, B, NI] (`ort_layout.inserted_table`; None elsewhere),
    memoised on the table per bits, runtime and the four target facts they read: the format
    policy (onnxruntime), fp16 arithmetic (the other runtimes), the last cache level's size
    and the NCHWc block."""
    policy, fp16, block = format_policy(target), "fp16" in target.isa, \
        ort_layout.nchwc_block(target)
    key = ("cpu.choices", runtime, bits_key(bits), policy, fp16, target.caches[-1].size_kib,
           block)
    return memoised(table.memo, key, lambda: _columns(table, bits, target, runtime, store))


def _columns(table: LayerTable, bits: np.ndarray, target: CpuTarget, runtime: int,
             store: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    choice = layer_choices(table, bits, target, runtime).astype(np.int64)
    return (weights_resident(table, store, target).astype(np.float64), choice,
            _emitted(table, bits, target, runtime),
            ort_layout.inserted_table(table, choice, target) if runtime == K.RUNTIME_ORT
            else None)


def _params(target: CpuTarget, threads: int | None) -> np.ndarray:
    key = ("params", resolve_threads(target, threads))  # None and cores give one row
    return memoised(target.memo, key, lambda: params_row(target, threads))


def _caches(target: CpuTarget) -> np.ndarray:
    return memoised(target.memo, ("caches",), lambda: cache_rows(target))


def _paths(target: CpuTarget, runtime: int, a53_kernels: bool) -> np.ndarray:
    key = ("paths", runtime, a53_kernels)
    return memoised(target.memo, key, lambda: path_table(target, runtime, a53_kernels))


def _emitted(table: LayerTable, bits: np.ndarray, target: CpuTarget,
             runtime: int) -> np.ndarray:
    """[L, B]: emitted weight bytes on onnxruntime (what edgesim writes), NaN elsewhere
    (the kernel's count); 0 where an earlier layer holds the weight (`held_once`)."""
    if runtime != K.RUNTIME_ORT:
        return held_once(table, np.full((len(table), len(bits)), np.nan))
    return held_once(table, emitted_weight_bytes(table, bits, target).astype(np.float64))


def run_kernel(x: KernelInputs, *, serial: bool = False,
               engine: str | None = None) -> np.ndarray:
    """Run the kernel on prepared inputs: float64 [kernels.cpu.NO, H, L, B] (`serial`: on
    this thread whatever the size, for callers that run many small calls or own the cores;
    `engine`: "python" or "numba", else picked by the work, `kernels.jit.engine`)."""
    out = np.empty((K.NO, len(x.params), len(x.lay), len(x.per_bit)))
    engine = jit.engine(out[0].size, engine)
    kernel.evaluate(x.lay, x.per_bit, x.resident, x.choice, x.params, x.caches, x.paths,
                    x.runtime, out, serial=serial, engine=engine)
    if x.inserted is not None:
        jit.choose(cpu_inserted.add_inserted, 0, engine)(x.inserted, x.params, x.caches, out)
    return out


def kernel_cost(out: np.ndarray, act_bytes: np.ndarray,
                weight_bytes: np.ndarray | None = None) -> Cost:
    """The `Cost` of the kernel's output (any leading shape after the field axis); its weight
    bytes are `weight_bytes` (as emitted) where given and not NaN, else the kernel's."""
    act_bytes = np.asarray(act_bytes, dtype=np.float64)
    if act_bytes.shape != out.shape[1:]:
        act_bytes = np.broadcast_to(act_bytes, out.shape[1:])
    wbytes = out[K.O_WBYTES]
    if weight_bytes is not None:
        wbytes = np.where(np.isnan(weight_bytes), wbytes, weight_bytes)
    # the kernel's fields precede O_WBYTES in `Cost`'s order (O_CYCLES ... O_UTIL)
    return Cost.from_kernel(out[:K.O_WBYTES], wbytes, act_bytes)


def evaluate_configs(table: LayerTable, bits: np.ndarray, targets: Sequence[CpuTarget], *,
                     threads: int | None = None, runtime: str = "onnxruntime",
                     engine: str | None = None) -> Cost:
    """Cost of every layer under every bit choice on H CPU configs, in one kernel call.

    Args:
        table: the model's layers.
        bits: int [B, 2] (w_bits, a_bits); 32 = float32, 16 = float16.
        targets: H CPU configurations (e.g. from `variants`).
        threads: threads per inference (None: each config's cores).
        runtime: "onnxruntime" or "ideal".
        engine: "python" or "numba" (`kernels.jit`; None: picked by the work).

    Returns:
        A `Cost` of [H, L, B] arrays.
    """
    x = kernel_inputs(table, bits, targets, threads=threads, runtime=runtime)
    return kernel_cost(run_kernel(x, engine=engine), x.act_bytes, x.weight_bytes)


def evaluate(table: LayerTable, bits: np.ndarray, target: CpuTarget, *,
             threads: int | None = None, runtime: str = "onnxruntime") -> Cost:
    """Cost of every layer under every bit choice on one CPU: [L, B] arrays.

    Args:
        table: the model's layers (`Graph.layer_table()`).
        bits: int [B, 2] (w_bits, a_bits).
        target: the CPU.
        threads: threads per inference (None: all cores).
        runtime: "onnxruntime" (the kernels onnxruntime takes) or "ideal" (ISA headroom).
    """
    from hwmodels import prepared_cpu  # lazy: it imports this module

    # the whole prepared call of this table, target and options, memoised on the table: a
    # repeated call (an allocator's, a simulation loop's) then costs a lookup and the kernel;
    # the bits are checked when the entry is built (a key of bad bits never gets stored)
    arr = np.asarray(bits, dtype=np.int64)
    key = ("cpu.call", target.token, threads, runtime, arr.tobytes(), arr.shape)
    call = memoised(table.memo, key, lambda: prepared_cpu.prepare(
        table, arr, target, threads=threads, runtime=runtime))
    return prepared_cpu.run(call, serial=False)


def power_time_energy_pj(cost: Cost, target: CpuTarget, threads: int | None = None, *,
                         include_idle: bool = True) -> np.ndarray:
    """Top-down energy: power x latency (`cost.latency_s` shape, picojoules).

    Power is the busy cores' share of (active - idle) power, plus idle power unless
    `include_idle` is False (the dynamic part a bottom-up switching model compares against).
    """
    busy = resolve_threads(target, threads) / target.cores
    watts = (target.power.active_w - target.power.idle_w) * busy
    watts += target.power.idle_w if include_idle else 0.0
    return cost.latency_s * watts * 1e12


def variants(target: CpuTarget, **axes: Sequence[Any]) -> list[CpuTarget]:
    """What-if configs: the cartesian product of replaced fields, for `evaluate_configs`.

    Top-level fields are replaced by name (`clock_ghz=[1.5, 2.4]`, `cores=[2, 4]`);
    `dram_gbps` sets the sustained DRAM bandwidth (and raises the theoretical one to match).
    """
    names = list(axes)
    return [_replace(target, dict(zip(names, combo)))
            for combo in itertools.product(*(axes[n] for n in names))]


def _replace(target: CpuTarget, changes: dict[str, Any]) -> CpuTarget:
    suffix = ",".join(f"{k}={v}" for k, v in changes.items())
    changes = dict(changes)
    if "dram_gbps" in changes:
        gbps = float(changes.pop("dram_gbps"))
        changes["dram"] = dataclasses.replace(
            target.dram, sustained_bandwidth_gbps=gbps,
            bandwidth_gbps=max(gbps, target.dram.bandwidth_gbps))
    return dataclasses.replace(target, name=f"{target.name}[{suffix}]", **changes)
