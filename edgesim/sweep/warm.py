"""Warm a sweep worker: load the cost kernels of every sweepable target kind from numba's
on-disk cache (compiling them on a cold cache) before the first batch arrives, so that this
cost is paid while the parent process is still loading models and sensitivities."""

from __future__ import annotations

import numpy as np

from compiler.ir import CATEGORY_GEMM, KIND_CODE, LayerTable
from hwmodels import kinds
from hwmodels.target import load_target

# a shipped target of each sweepable kind, to run its cost call on
WARM_TARGETS = ("systolic-16x16", "rpi5")
WARM_BITS = np.array([[8, 8], [4, 8], [32, 32]])


def one_conv_table() -> LayerTable:
    """A one-layer table: a 3x3 conv, 16 -> 16 channels on an 8x8 map (m, n, k per group)."""
    ints = {"m": 16, "n": 64, "k": 144, "groups": 1, "macs": 16 * 64 * 144, "ops": 0,
            "w_elems": 16 * 144, "a_in_elems": 16 * 64, "a_out_elems": 16 * 64,
            "in_bytes": 4 * 16 * 64, "out_bytes": 4 * 16 * 64, "w_bytes": 4 * 16 * 144}
    return LayerTable(names=("conv",), kind_code=np.array([KIND_CODE["conv"]], dtype=np.int32),
                      category=np.array([CATEGORY_GEMM], dtype=np.int32),
                      **{k: np.array([v], dtype=np.int64) for k, v in ints.items()},
                      w_density=np.ones(1), a_density=np.ones(1))


def warm_kernels() -> None:
    """One small cost call per sweepable kind (its serial kernel, as a one-thread worker runs)."""
    table = one_conv_table()
    for name in WARM_TARGETS:
        target = load_target(name)
        hooks = kinds.sweep(target)
        if hooks is not None:
            hooks.costs(table, WARM_BITS, [target],
                        **kinds.host_options(target, None, "onnxruntime"))
