"""Microcontrollers (Cortex-M class): the target schema, the cost model's glue, and `check_fit`.

The arithmetic lives in `hwmodels.kernels.mcu` (formulas and sources are listed there). This
module resolves each bit choice to a kernel throughput from the target's CMSIS-NN-like kernel
table, calls the kernel once and wraps the result in a `Cost`. It must not import
`hwmodels.target`.

Kernel selection: activations run as int8 (a <= 8), int16 (a <= 16) or fp32; weights take
the narrowest kernel width >= w_bits for that activation width. Weight-only bit choices
(float activations) dequantise the weights once per layer and run the fp32 kernel. A bit
choice with no kernel costs infinite cycles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from compiler.ir import CATEGORY_GEMM, KIND_CODE, LayerTable
from hwmodels.cost import Cost, check_bits, shared_once
from hwmodels.kernels import jit
from hwmodels.kernels import mcu as K

LAYER_CLASSES = {"conv": K.CLASS_CONV, "depthwise": K.CLASS_DEPTHWISE, "linear": K.CLASS_LINEAR}
_CLASS_OF_KIND = {"conv": K.CLASS_CONV, "conv_transpose": K.CLASS_CONV,
                  "linear": K.CLASS_LINEAR, "matmul": K.CLASS_LINEAR}
_COST_FIELDS = ("cycles", "latency_s", "energy_pj_compute", "energy_pj_onchip",
                "energy_pj_dram", "bound", "util")


@dataclass(frozen=True)
class McuKernel:
    """One optimised kernel: its layer class, operand widths and measured/derived MACs/cycle."""

    layer: Literal["conv", "depthwise", "linear"]
    w_bits: Literal[4, 8, 16, 32]
    a_bits: Literal[8, 16, 32]
    macs_per_cycle: float


@dataclass(frozen=True, kw_only=True)
class McuTarget:
    """A microcontroller: one in-order core, SRAM for activations, flash for weights.

    `arena_kib` is the largest contiguous SRAM region the activation arena can use;
    `flash_wait_states` apply at `flash_clock_mhz` per `flash_line_bytes` read; `helium`:
    the core has the M-profile Vector Extension (Cortex-M55 / M85).
    """

    name: str
    kind: Literal["mcu"] = "mcu"
    description: str
    sources: dict[str, str]
    core: str
    clock_mhz: float
    fpu: Literal["none", "sp", "dp"]
    dsp: bool
    sram_kib: float
    arena_kib: float
    dcache_kib: float = field(default=0.0, metadata={"ge": 0})
    flash_kib: float
    flash_wait_states: int = field(metadata={"ge": 0})
    flash_clock_mhz: float
    flash_line_bytes: int
    sram_bytes_per_cycle: float
    kernels: tuple[McuKernel, ...]
    stream_cycles_per_op: float
    float_cycles_per_op: float
    exp_cycles: float
    op_overhead_cycles: float
    run_power_mw: float
    helium: bool = False

    def __post_init__(self) -> None:
        if self.arena_kib > self.sram_kib:
            raise ValueError(f"arena_kib: exceeds sram_kib ({self.sram_kib})")
        keys = [(k.layer, k.w_bits, k.a_bits) for k in self.kernels]
        if len(set(keys)) != len(keys):
            raise ValueError("kernels: duplicate (layer, w_bits, a_bits) entries")

    @property
    def peak_macs_per_cycle(self) -> float:
        """Helium (MVE) on a dual-beat core: a 128-bit VMLADAV (16 int8 MACs) per two cycles
        (Cortex-M55 TRM); SMLAD retires two 16-bit MACs per cycle (DSP extension); else one."""
        return 8.0 if self.helium else 2.0 if self.dsp else 1.0


@dataclass(frozen=True)
class FitReport:
    """Whether a bit assignment fits the MCU's memories, and by how much it overflows.

    Peak activation is the layer-by-layer bound used by CMSIS-NN / TinyEngine deployments:
    the largest (input + output) activation bytes of any one layer at a_bits.
    """

    weight_bytes: int
    flash_bytes: int
    peak_act_bytes: int
    peak_layer: str
    sram_bytes: int

    @property
    def weight_overflow_bytes(self) -> int:
        return max(0, self.weight_bytes - self.flash_bytes)

    @property
    def act_overflow_bytes(self) -> int:
        return max(0, self.peak_act_bytes - self.sram_bytes)

    @property
    def fits(self) -> bool:
        return self.weight_overflow_bytes == 0 and self.act_overflow_bytes == 0


def act_width(a_bits: int) -> int:
    """Activation width the kernels run at: int8, int16 or fp32."""
    return 8 if a_bits <= 8 else 16 if a_bits <= 16 else 32


def weight_width(w_bits: int) -> int:
    """Storage width of weights in flash: int4 (packed two per byte), int8, fp16, fp32."""
    return 4 if w_bits <= 4 else 8 if w_bits <= 8 else w_bits


def kernel_rate(target: McuTarget, layer: str, w_bits: int, a_bits: int) -> tuple[float, bool]:
    """(MACs/cycle, dequantise-first) of the kernel a layer class runs at (w_bits, a_bits);
    rate 0 when no kernel fits."""
    a = act_width(a_bits)
    dequant = a == 32 and w_bits < 16
    w = 32 if dequant else w_bits
    rates = sorted((k.w_bits, k.macs_per_cycle) for k in target.kernels
                   if k.layer == layer and k.a_bits == a and k.w_bits >= w)
    return (rates[0][1] if rates else 0.0), dequant


def _per_bit_arrays(target: McuTarget, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rates [3, B] and per-bit-choice columns [NB, B] for the kernel."""
    rates = np.zeros((len(LAYER_CLASSES), len(bits)))
    per_b = np.zeros((K.NB, len(bits)))
    for b, (w, a) in enumerate(bits.tolist()):
        for name, row in LAYER_CLASSES.items():
            rates[row, b], dequant = kernel_rate(target, name, w, a)
        per_b[:, b] = weight_width(w) / 8.0, float(dequant), act_width(a) / 8.0
    return rates, per_b


def _params(target: McuTarget) -> np.ndarray:
    p = np.zeros(K.NP)
    hz = target.clock_mhz * 1e6
    line_cycles = (target.flash_wait_states + 1) * target.clock_mhz / target.flash_clock_mhz
    p[[K.P_CLOCK_HZ, K.P_FLASH_CYC_PER_BYTE]] = hz, line_cycles / target.flash_line_bytes
    p[[K.P_DCACHE_BYTES, K.P_SRAM_BPC]] = target.dcache_kib * 1024.0, target.sram_bytes_per_cycle
    p[[K.P_STREAM_CPO, K.P_FLOAT_CPO, K.P_EXP_CYC]] = (target.stream_cycles_per_op,
                                                      target.float_cycles_per_op,
                                                      target.exp_cycles)
    p[[K.P_OP_OVH, K.P_POWER_W, K.P_PEAK]] = (target.op_overhead_cycles,
                                              target.run_power_mw * 1e-3,
                                              target.peak_macs_per_cycle)
    return p


def layer_classes(table: LayerTable) -> np.ndarray:
    """Kernel class per layer: depthwise for grouped convs with one filter per group."""
    names = {code: kind for kind, code in KIND_CODE.items()}
    cls = np.array([_CLASS_OF_KIND.get(names[int(c)], K.CLASS_LINEAR) for c in table.kind_code],
                   dtype=np.int64)
    depthwise = (cls == K.CLASS_CONV) & (table.groups > 1) & (table.n == 1)
    return np.where(depthwise, K.CLASS_DEPTHWISE, cls)


def layer_array(table: LayerTable) -> np.ndarray:
    """The kernel's layer input, int64 [L, NL] (column order = kernels.mcu.L_*)."""
    if not len(table):
        return np.zeros((0, K.NL), dtype=np.int64)
    cols = (table.kind_code, table.category, layer_classes(table), table.m, table.n, table.k,
            table.groups, table.macs, table.ops, table.w_elems, table.a_in_elems,
            table.a_out_elems, table.w_bytes, table.exp_evaluations())
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.int64)


def evaluate(table: LayerTable, bits: np.ndarray, target: McuTarget, *,
             threads: int | None = None, runtime: str = "onnxruntime") -> Cost:
    """Cost of every layer under every bit choice on the MCU: [L, B] arrays.

    `threads` and `runtime` describe a host CPU (an MCU has one core and runs its CMSIS-NN-like
    kernels); they are accepted so that `hwmodels.cost.evaluate` can pass them to every model.
    """
    bits = check_bits(bits)
    rates, per_b = _per_bit_arrays(target, bits)
    out = np.zeros((K.NO, len(table), len(bits)))
    # small calls (every single-design one) run in Python; `kernels.jit.engine`
    jit.choose(K.evaluate, out[0].size)(layer_array(table), rates, per_b, _params(target), out)
    act = (table.a_in_elems + table.a_out_elems)[:, None] * per_b[K.B_ABYTES][None, :]
    return Cost(**dict(zip(_COST_FIELDS, out)), weight_bytes=shared_once(table, out[K.O_WBYTES]),
                act_bytes=act)


def check_fit(table: LayerTable, bits: np.ndarray, target: McuTarget) -> FitReport:
    """Check a bit assignment against flash (weights) and the SRAM arena (activations).

    Args:
        table: the model's layers.
        bits: int [L, 2] per-layer (w_bits, a_bits), or one (w_bits, a_bits) pair for all.
        target: the MCU.

    Returns:
        A `FitReport` (overflows in bytes; `fits` when both are zero).
    """
    per_layer = np.broadcast_to(np.asarray(bits, dtype=np.int64).reshape(-1, 2), (len(table), 2))
    check_bits(per_layer)
    w_width = np.array([weight_width(w) for w in per_layer[:, 0]], dtype=np.int64)
    a_width = np.array([act_width(a) for a in per_layer[:, 1]], dtype=np.int64)
    gemm = table.category == CATEGORY_GEMM
    # packed storage: ceil(bits / 8) bytes per layer
    weights = np.ceil(shared_once(  # a shared weight stored once
        table, np.where(gemm, (table.w_elems * w_width + 7) // 8, table.w_bytes)))
    acts = ((table.a_in_elems + table.a_out_elems) * a_width + 7) // 8
    peak = int(np.argmax(acts)) if len(table) else 0
    return FitReport(weight_bytes=int(weights.sum()), flash_bytes=int(target.flash_kib * 1024),
                     peak_act_bytes=int(acts[peak]) if len(table) else 0,
                     peak_layer=table.names[peak] if len(table) else "",
                     sram_bytes=int(target.arena_kib * 1024))


def with_clock(target: McuTarget, clock_mhz: float, flash_wait_states: int) -> McuTarget:
    """The same MCU at another clock (flash wait states depend on the clock)."""
    return dataclasses.replace(target, clock_mhz=clock_mhz, flash_wait_states=flash_wait_states)
