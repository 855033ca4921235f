"""What a model costs on a target: the `Cost` arrays, and `evaluate`, which picks the model.

Every cost model has the signature `evaluate(table, bits, target) -> Cost` (plus keyword
`threads` and `runtime` for kinds whose capabilities say they run on a host CPU):
`table` is a `compiler.ir.LayerTable` (L layers), `bits` an int array [B, 2] of
(w_bits, a_bits) choices (32 = float32, 16 = float16), and the result holds arrays of shape
[L, B] (or [H, L, B] when H hardware configurations are swept).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from compiler.ir import CATEGORY_GEMM, LayerTable

BOUND_COMPUTE, BOUND_ONCHIP, BOUND_DRAM, BOUND_OVERHEAD = 0, 1, 2, 3
BOUND_NAMES = ("compute", "onchip", "dram", "overhead")
VALID_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)  # 16 and 32 are float16 and float32
# width -> valid, read-only; one False past the widest, so that `take(mode="clip")` sends
# every width below 0 to entry 0 and every one above 32 to that entry: both invalid
_VALID = np.isin(np.arange(max(VALID_BITS) + 2), VALID_BITS)
_VALID.flags.writeable = False

_SUMMED = ("cycles", "latency_s", "energy_pj_compute", "energy_pj_onchip", "energy_pj_dram",
           "weight_bytes")


@dataclass(frozen=True)
class Cost:
    """Per-layer, per-bit-choice cost: every field has the same shape, [L, B] or [H, L, B].

    Attributes:
        cycles: target clock cycles.
        latency_s: wall time in seconds.
        energy_pj_compute / energy_pj_onchip / energy_pj_dram: energy split, picojoules.
        bound: int8 code of what limits the layer (see `BOUND_NAMES`).
        util: achieved fraction of the target's peak MAC throughput, 0..1.
        weight_bytes: weight storage at the chosen bits (None -> zeros).
        act_bytes: activation bytes live while the layer runs, in + out (None -> zeros).
    """

    cycles: np.ndarray
    latency_s: np.ndarray
    energy_pj_compute: np.ndarray
    energy_pj_onchip: np.ndarray
    energy_pj_dram: np.ndarray
    bound: np.ndarray
    util: np.ndarray
    weight_bytes: np.ndarray | None = None
    act_bytes: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = np.shape(self.cycles)
        for name in _FIELD_NAMES:  # a module tuple: dataclasses.fields() costs a us per call
            value = getattr(self, name)
            value = np.zeros(shape) if value is None else value
            dtype = _INT8 if name == "bound" else _FLOAT64
            # cost calls take microseconds: skip asarray when the array is already right
            ready = type(value) is np.ndarray and value.dtype == dtype
            arr = value if ready else np.asarray(value, dtype=dtype)
            if arr.shape != shape:
                raise ValueError(f"Cost.{name} has shape {arr.shape}, cycles has {shape}")
            object.__setattr__(self, name, arr)  # frozen: normalise once, here

    @classmethod
    def from_kernel(cls, out: np.ndarray, weight_bytes: np.ndarray,
                    act_bytes: np.ndarray) -> Cost:
        """The `Cost` of a kernel's output: `out` float64 [7, ...] holds the fields before
        `weight_bytes`, in order; both byte arrays are float64 of `out[0]`'s shape.

        What `__post_init__` checks, the kernels guarantee: this skips it, a quarter of a
        prepared cost call (bench/bench_costcall.py).

        Raises:
            ValueError: byte arrays of another shape than the kernel's fields.
        """
        shape = out.shape[1:]
        if weight_bytes.shape != shape or act_bytes.shape != shape or len(out) != 7:
            raise ValueError(f"kernel output {out.shape} does not match bytes "
                             f"{weight_bytes.shape}, {act_bytes.shape}")
        cost = object.__new__(cls)
        cost.__dict__.update(zip(_FIELD_NAMES, out), bound=out[5].astype(_INT8),
                             weight_bytes=weight_bytes, act_bytes=act_bytes)
        return cost

    @property
    def energy_pj(self) -> np.ndarray:
        """Total energy, picojoules."""
        total: np.ndarray = self.energy_pj_compute + self.energy_pj_onchip + self.energy_pj_dram
        return total

    def total(self) -> Cost:
        """Sum over layers (axis -2): one value per bit choice (per hardware config).

        Cycles, latency, energy and weight bytes add up; `act_bytes` is the peak over layers;
        `util` is the latency-weighted mean; `bound` is the class holding most latency.
        """
        sums = {name: getattr(self, name).sum(axis=-2) for name in _SUMMED}
        time = self.latency_s
        share = np.stack([np.where(self.bound == b, time, 0.0).sum(axis=-2) for b in range(4)])
        util = _busy(self.util, time).sum(axis=-2) / np.maximum(time.sum(axis=-2), 1e-300)
        assert self.act_bytes is not None  # __post_init__ fills it
        return Cost(**sums, bound=share.argmax(axis=0), util=util,
                    act_bytes=self.act_bytes.max(axis=-2, initial=0.0))

    def __add__(self, other: Cost) -> Cost:
        """Run `self` then `other`: quantities add, the slower part names the bound."""
        sums = {name: getattr(self, name) + getattr(other, name) for name in _SUMMED}
        time = self.latency_s + other.latency_s
        busy = _busy(self.util, self.latency_s) + _busy(other.util, other.latency_s)
        assert self.act_bytes is not None and other.act_bytes is not None  # __post_init__ fills
        return Cost(**sums,
                    bound=np.where(self.latency_s >= other.latency_s, self.bound, other.bound),
                    util=busy / np.maximum(time, 1e-300),
                    act_bytes=np.maximum(self.act_bytes, other.act_bytes))


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Cost))
_INT8, _FLOAT64 = np.dtype(np.int8), np.dtype(np.float64)


def _busy(util: np.ndarray, time: np.ndarray) -> np.ndarray:
    # util * time, with 0 for layers that cannot run (util 0, infinite time)
    return util * np.where(util > 0, time, 0.0)


_T = TypeVar("_T")
# entries a memo keeps (`memoised`): a caller cycling through more bit-choice sets or
# targets than this recomputes, instead of growing the memo without bound
MEMO_ENTRIES = 64


def memoised(memo: dict[Hashable, object], key: Hashable, build: Callable[[], _T]) -> _T:
    """`memo[key]`, built by `build()` on first use; the oldest entry goes when the memo
    holds `MEMO_ENTRIES`. For values that are pure functions of frozen data (a `LayerTable`'s
    or a target's `memo`) and of `key`, so an entry never goes stale.

    The arrays it returns are shared by every later call with the same key: read them only.
    """
    if key in memo:
        return memo[key]  # type: ignore[return-value]  # build(), stored under this key
    value = build()
    while len(memo) >= MEMO_ENTRIES:
        memo.pop(next(iter(memo)), None)  # dicts keep insertion order: the oldest first
    memo[key] = value
    return value


class Memoised:
    """Base of the frozen target classes: what cost models derive from a target alone is
    memoised on it (`memo`, through `memoised`), built on first use; the fields are frozen, so
    it cannot go stale, and `dataclasses.replace` (a what-if variant) starts an empty memo."""

    def __getstate__(self) -> dict[str, Any]:
        # pickled (to a sweep worker) without memo and token: the copy builds its own
        return {k: v for k, v in vars(self).items() if k not in ("memo", "token")}

    @functools.cached_property
    def memo(self) -> dict[Hashable, Any]:
        """Per-target values (`hwmodels.cpu`: path tables, parameter and cache rows)."""
        return {}

    @functools.cached_property
    def token(self) -> object:
        """A hashable stand-in for this target object in other memos' keys (the target is
        unhashable: `sources` is a dict); a new object per target, held by it."""
        return object()


def bits_key(bits: np.ndarray) -> tuple[bytes, tuple[int, ...]]:
    """A hashable key of a bit-choice array (its bytes and shape) for `memoised`."""
    return bits.tobytes(), bits.shape


def check_bits(bits: np.ndarray) -> np.ndarray:
    """Return `bits` as int64 [B, 2] (w_bits, a_bits), or raise ValueError naming the bad row."""
    arr = np.asarray(bits, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"bits must have shape [B, 2] (w_bits, a_bits), got {arr.shape}")
    valid = _VALID.take(arr, mode="clip")  # a table lookup: np.isin costs ~40 us
    if not valid.all():
        row = int(np.argwhere(~valid)[0, 0])
        raise ValueError(f"bits[{row}] = {tuple(arr[row])}: each width must be in {VALID_BITS}")
    return arr


def check_precisions(widths: list[int]) -> None:
    """A target's `precisions` widths: at least one, none twice (ValueError naming the field;
    the target loader reports it against the file)."""
    if not widths:
        raise ValueError("precisions: at least one precision is required")
    if len(set(widths)) != len(widths):
        raise ValueError(f"precisions: duplicate widths {sorted(widths)}")


def memory_bytes(table: LayerTable, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight bytes and live activation bytes per layer and bit choice, each [L, B].

    GEMM weights are stored at w_bits; other layers' constants (norm scales, biases) stay at
    their IR size. Activations (inputs + outputs) are at a_bits.
    """
    return checked_memory_bytes(table, check_bits(bits))


def checked_memory_bytes(table: LayerTable,
                         bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`memory_bytes` for bits `check_bits` has returned (a cost call checks them once)."""
    w_bits, a_bits = bits[:, 0][None, :], bits[:, 1][None, :]
    gemm = (table.category == CATEGORY_GEMM)[:, None]
    quantised = table.w_elems[:, None] * w_bits / 8.0
    weight = np.where(gemm, quantised, table.w_bytes[:, None].astype(np.float64))
    act = (table.a_in_elems + table.a_out_elems)[:, None] * a_bits / 8.0
    return weight, act


def evaluate(table: LayerTable, bits: np.ndarray, target: object, *, threads: int | None = None,
             runtime: str = "onnxruntime") -> Cost:
    """Cost of every layer of `table` under every bit choice on `target`.

    Args:
        table: the model's layers (`Graph.layer_table()`).
        bits: int array [B, 2] of (w_bits, a_bits); 32 = float32, 16 = float16.
        target: a target of a registered kind (see `hwmodels.kinds`).
        threads: host threads, for kinds whose capabilities say `threads` (None: all cores).
        runtime: the inference runtime, for kinds whose capabilities list runtimes.

    Returns:
        A `Cost` of [L, B] arrays.
    """
    from hwmodels import kinds  # lazy: the models import this module
    host = kinds.host_options(target, threads, runtime)  # only to the models they describe
    # each kind's model checks `bits` itself (`check_bits`), the CPU's once per memo entry
    cost: Cost = kinds.cost_model(target)(table, bits, target, **host)
    return stored_once(table, cost)


def stored_once(table: LayerTable, cost: Cost) -> Cost:
    """`cost` with no weight bytes at the rows whose weights an earlier row already holds
    (`LayerTable.w_repeat`): a shared weight is stored once; its latency and energy stay
    per reader (each streams it)."""
    if table.w_repeat is None or not table.w_repeat.any():
        return cost
    return dataclasses.replace(cost, weight_bytes=held_once(table, np.asarray(cost.weight_bytes)))


def shared_once(table: LayerTable, weight: np.ndarray) -> np.ndarray:
    """`held_once`, and at the rows that read an earlier row's weight with constants of their
    own (`LayerTable.w_shared`: a Gemm sharing B with its own C), only those constants' share
    of the row's bytes. For models whose weight bytes scale with a row's constant elements
    (MCU, MAC arrays); the CPU counts a held row's own bias as emitted
    (`compiler.format_bytes.WeightGeometry.held`)."""
    out = held_once(table, weight)
    if table.w_shared is None or not table.w_shared.any():
        return out
    from compiler.format_bytes import table_geometry  # it imports compiler.ir, as this does

    own = np.asarray(table_geometry(table).bias).reshape(-1) / np.maximum(table.w_elems, 1)
    share = np.where(table.w_shared, own, 1.0)
    return out * (share if out.ndim == 1 else share[:, None])


def held_once(table: LayerTable, weight: np.ndarray) -> np.ndarray:
    """A copy of per-layer weight bytes `weight` ([..., L, B] or [L]) with zeros at the rows
    whose weights an earlier row holds (`LayerTable.w_repeat`)."""
    out = np.array(weight)
    if table.w_repeat is not None:
        if out.ndim == 1:
            out[table.w_repeat] = 0
        else:
            out[..., table.w_repeat, :] = 0
    return out
