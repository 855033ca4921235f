"""CPU cost calls in microseconds: what `hwmodels.cpu.evaluate` derives from its arguments
before its kernel (the layer array, the target's path, parameter and cache tables for the
runtime and thread count, every layer's kernel path per bit choice), computed once and held
in a `PreparedCpuCall`; `run` then costs one serial kernel call and a `Cost`.

The kernel is `hwmodels.kernels.cpu`'s own, called with the arrays `hwmodels.cpu` builds, so a
change to the CPU formulas reaches prepared calls unchanged. Like `hwmodels.prepared`, the
prepared call is an explicit value, not a hidden cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import LayerTable
from hwmodels.cost import Cost
from hwmodels.cpu import KernelInputs, kernel_inputs, run_kernel
from hwmodels.cpu_schema import CpuTarget
from hwmodels.kernels.cpu_layout import O_WBYTES


@dataclass(frozen=True, eq=False)  # holds arrays
class PreparedCpuCall:
    """The CPU kernel's inputs for one network, one target, a runtime, a thread count and B
    bit choices, and the byte arrays its `Cost`s hand out (read-only, shared by them)."""

    inputs: KernelInputs
    act_bytes: np.ndarray  # [L, B]
    # [L, B] emitted weight bytes (onnxruntime), or None where the kernel's figure applies to
    # every layer (other runtimes); `kernel_where` [L, B] marks the layers that take the
    # kernel's figure when only some do (None: none or all)
    weight_bytes: np.ndarray | None = None
    kernel_where: np.ndarray | None = None


def prepare(table: LayerTable, bits: np.ndarray, target: CpuTarget, *,
            threads: int | None = None, runtime: str = "onnxruntime") -> PreparedCpuCall:
    """Everything `hwmodels.cpu.evaluate(table, bits, target, ...)` computes before its kernel.

    Raises:
        TypeError: for a target that is not a CPU.
        ValueError: on bad bits, threads or runtime.
    """
    if not isinstance(target, CpuTarget):
        raise TypeError(f"prepared CPU calls cover CPUs; got {type(target).__name__}")
    x = kernel_inputs(table, bits, [target], threads=threads, runtime=runtime)
    act = np.ascontiguousarray(np.broadcast_to(x.act_bytes, x.choice.shape[1:]))
    emitted, unknown = x.weight_bytes[0], np.isnan(x.weight_bytes[0])
    act.flags.writeable = False
    if unknown.all():
        return PreparedCpuCall(x, act)
    return PreparedCpuCall(x, act, _read_only(emitted), unknown if unknown.any() else None)


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, dtype=np.float64)
    arr.flags.writeable = False
    return arr


def run(p: PreparedCpuCall, *, serial: bool = True) -> Cost:
    """The `Cost` [L, B] of a prepared call; equal to `hwmodels.cpu.evaluate`'s (`serial`:
    one thread whatever the size; one config rarely pays for threads)."""
    out = run_kernel(p.inputs, serial=serial)[:, 0]
    wbytes = out[O_WBYTES] if p.weight_bytes is None else p.weight_bytes
    if p.kernel_where is not None:
        wbytes = np.where(p.kernel_where, out[O_WBYTES], wbytes)
    # the kernel's fields precede O_WBYTES in `Cost`'s order (as `hwmodels.cpu.kernel_cost`)
    return Cost.from_kernel(out[:O_WBYTES], wbytes, p.act_bytes)
