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
from hwmodels.cpu import KernelInputs, kernel_cost, kernel_inputs, run_kernel
from hwmodels.cpu_schema import CpuTarget


@dataclass(frozen=True, eq=False)  # holds arrays
class PreparedCpuCall:
    """The CPU kernel's inputs for one network, one target, a runtime, a thread count and B
    bit choices."""

    inputs: KernelInputs
    act_bytes: np.ndarray  # [L, B]


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
    return PreparedCpuCall(x, np.ascontiguousarray(np.broadcast_to(x.act_bytes,
                                                                   x.choice.shape[1:])))


def run(p: PreparedCpuCall) -> Cost:
    """The `Cost` [L, B] of a prepared call; equal to `hwmodels.cpu.evaluate`'s."""
    out = run_kernel(p.inputs, serial=True)  # one config: threads cost more than they save
    return kernel_cost(out[:, 0], p.act_bytes, p.inputs.weight_bytes[0])
