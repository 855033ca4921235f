"""What a sweep needs per target kind: the fields it may vary, how a variant is built, how H
configurations are evaluated in one call, and the area proxy.

Area proxies (relative silicon cost, for ranking designs; not square millimetres):
- MAC array: `rows * cols * widest_bits + sram_bytes`, where `widest_bits` is the widest
  supported precision (a PE's datapath, as in Bit Fusion's bit-scalable PEs, is sized by it) and
  `sram_bytes` the ifmap + filter + ofmap SRAM capacity. One unit is one MAC-bit or one byte.
- CPU: `cores * simd_bits * fma_pipes + cache_bytes`: the SIMD MAC datapath bits of every core,
  plus every cache's capacity (private levels once per core, shared levels once).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from compiler.ir import LayerTable
from edgesim.errors import UserError
from hwmodels import configs, cpu, macarray
from hwmodels.cost import Cost
from hwmodels.target import TargetError, load_target, target_from_dict

_META_FIELDS = ("name", "kind", "description", "sources")


def _macarray_variant(base: macarray.MacArrayTarget, changes: dict[str, Any],
                      label: str) -> macarray.MacArrayTarget:
    # `configs.grid` without its name formatting (a third of the batch time for 10^4 points)
    return dataclasses.replace(base, name=f"{base.name}[{label}]", **changes)


def _cpu_variant(base: cpu.CpuTarget, changes: dict[str, Any], label: str) -> cpu.CpuTarget:
    return cpu.variants(base, **{name: [value] for name, value in changes.items()})[0]


def _macarray_costs(table: LayerTable, bits: np.ndarray, targets: list, runtime: str,
                    threads: int | None) -> Cost:
    return macarray.evaluate_configs(table, bits, configs.from_targets(targets))


def _cpu_costs(table: LayerTable, bits: np.ndarray, targets: list, runtime: str,
               threads: int | None) -> Cost:
    return cpu.evaluate_configs(table, bits, targets, threads=threads, runtime=runtime)


def _macarray_area(t: macarray.MacArrayTarget) -> dict[str, float]:
    mac_bits = t.rows * t.cols * max(p.bits for p in t.precisions)
    sram = (t.ifmap_sram_kib + t.filter_sram_kib + t.ofmap_sram_kib) * 1024.0
    return {"area_proxy": mac_bits + sram, "area_mac_bits": float(mac_bits),
            "area_sram_bytes": sram}


def _cpu_area(t: cpu.CpuTarget) -> dict[str, float]:
    mac_bits = t.cores * t.simd_bits * t.fma_pipes
    cache = sum(c.size_kib * 1024.0 * (1 if c.shared else t.cores) for c in t.caches)
    return {"area_proxy": mac_bits + cache, "area_mac_bits": float(mac_bits),
            "area_sram_bytes": cache}


@dataclass(frozen=True)
class Kind:
    """A sweepable target kind.

    Attributes:
        variant: `(base, changes, label) -> target` with the changed fields (`label` names it).
        costs: `(table, bits, targets, runtime, threads) -> Cost [H, L, B]`, one kernel call.
        area: the area proxy of one target (see the module docstring).
        float_rest: layers other than conv/linear/matmul run in float32 (a CPU running QDQ
            int8 kernels, as onnxruntime does) rather than at the activation width (an
            accelerator's full-integer pipeline, as the Edge TPU requires).
        aliases: extra parameter names `variants` understands, with their type.
    """

    variant: Callable[..., Any]
    costs: Callable[..., Cost]
    area: Callable[[Any], dict[str, float]]
    float_rest: bool
    aliases: Mapping[str, type] = dataclasses.field(default_factory=dict)


KINDS: Mapping[str, Kind] = MappingProxyType({
    "macarray": Kind(_macarray_variant, _macarray_costs, _macarray_area, float_rest=False),
    "cpu": Kind(_cpu_variant, _cpu_costs, _cpu_area, float_rest=True,
                aliases=MappingProxyType({"dram_gbps": float})),
})


def load_base(ref: str, root: Path, file: str) -> Any:
    """The base target of a space: a shipped name, or a YAML path relative to the space file."""
    is_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    try:
        base = load_target(str(root / ref) if is_path else ref)
    except TargetError as e:
        raise UserError(f"{file}: base", str(e)) from None
    if base.kind not in KINDS:
        raise UserError(f"{file}: base", f"a {base.kind} target cannot be swept; sweeps take "
                        f"{', '.join(KINDS)} targets")
    return base


def sweepable(base: Any) -> tuple[str, ...]:
    """Parameter names a space may vary for this base: its fields and the kind's aliases."""
    names = [f.name for f in dataclasses.fields(base) if f.name not in _META_FIELDS]
    return (*names, *KINDS[base.kind].aliases)


def field_is_integer(base: Any, name: str) -> bool:
    """True if the field holds an int (distribution draws are then rounded)."""
    value = getattr(base, name, None)
    return isinstance(value, int) and not isinstance(value, bool)


def to_raw(obj: Any) -> Any:
    """A target as the plain data its YAML holds (dataclasses -> dicts, tuples -> lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_raw(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_raw(v) for k, v in obj.items()}
    return obj


def check_value(base: Any, name: str, value: Any, file: str, where: str) -> Any:
    """Validate `name = value` on `base` as a target file would; return the typed value.

    Raises:
        UserError: `<file>: <where>` and what the target validator said.
    """
    alias = KINDS[base.kind].aliases.get(name)
    try:
        if alias is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TargetError(file, name, f"expected {alias.__name__}, got "
                                  f"{type(value).__name__} {value!r}")
            raw = to_raw(KINDS[base.kind].variant(base, {name: alias(value)}, name))
        else:
            raw = {**to_raw(base), name: value}
        checked = target_from_dict(raw, file)
    except TargetError as e:
        what = e.what if e.field == name else f"{e.field}: {e.what}"
        raise UserError(f"{file}: {where}", what) from None
    except ValueError as e:  # a cross-field rule while building the variant
        raise UserError(f"{file}: {where}", str(e)) from None
    return alias(value) if alias is not None else getattr(checked, name)


def build_target(base: Any, typed: tuple[tuple[str, Any], ...], label: str) -> Any:
    """The variant of `base` with the point's typed parameter values, named by `label`."""
    return KINDS[base.kind].variant(base, dict(typed), label)


def fingerprint_target(base: Any) -> Any:
    """The base target as plain data, for the space fingerprint."""
    return to_raw(base)


def model_digest(ref: str) -> str:
    """`zoo:NAME` itself, or the sha256 of an ONNX file's bytes (a changed file is a new model)."""
    if ref.startswith("zoo:"):
        return ref
    return hashlib.sha256(Path(ref).read_bytes()).hexdigest()
