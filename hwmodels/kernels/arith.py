"""Arithmetic the cost kernels share (the CPU model's `kernels.cpu_*` and the MAC-array
model's `kernels.macarray*`): one home, compiled once into numba's cache."""

from __future__ import annotations

import math

from hwmodels.kernels.jit import njit


@njit(cache=True)
def cdiv(a: float, b: float) -> float:
    """ceil(a / b) for positive b, tolerant of float rounding."""
    return float(math.ceil(a / b - 1e-9))
