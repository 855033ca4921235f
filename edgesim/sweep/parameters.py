"""The varied fields of a design space: the `parameters:` mapping of a space YAML, parsed and
checked into `Parameter`s (`edgesim.sweep.space` reads the rest of the file).

Each parameter is a list of values, an inclusive range (`{range: [low, high], step|num,
scale}`) that becomes a list, or a continuous distribution (`{uniform|loguniform: [low,
high]}`, random and lhs searches only). Every value is checked by building the base target
with it (`edgesim.sweep.kinds.check_value`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesim.sweep.checks import as_int, as_mapping, as_number, as_text, err
from edgesim.sweep.kinds import check_value, field_is_integer, sweepable, to_raw

DISTRIBUTIONS = ("uniform", "loguniform")
MAX_VALUES = 10_000  # values of one parameter, checked before a space is enumerated


@dataclass(frozen=True)
class Parameter:
    """One varied field: a list of values, or a continuous distribution.

    Attributes:
        name: the target field (or alias) it sets.
        raw: the listed values as written (JSON-able); empty for a distribution.
        typed: the same values as the target holds them (e.g. `Precision` tuples).
        low, high: a distribution's bounds (None for a list).
        log: a log-uniform distribution.
        integer: the field is an int (distribution draws are rounded to integers).
    """

    name: str
    raw: tuple[Any, ...] = ()
    typed: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def discrete(self) -> bool:
        return self.low is None

    def at(self, u: float) -> float | int:
        """The distribution's value at quantile u in [0, 1)."""
        assert self.low is not None and self.high is not None  # a distribution's bounds
        lo, hi = float(self.low), float(self.high)
        if self.log:
            x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            return int(round(x)) if self.integer else x
        if self.integer:
            return int(lo + math.floor(u * (hi - lo + 1)))
        return lo + u * (hi - lo)



def parameters(v: Any, base: Any, grid: bool, file: str) -> tuple[Parameter, ...]:
    """The checked `parameters:` mapping of a space; `grid`: the search takes every point, so
    no parameter may be a distribution."""
    if not isinstance(v, dict) or not v:
        raise err(file, "parameters", "expected a non-empty mapping of target fields")
    known = sweepable(base)
    out = []
    for name, spec in v.items():
        where = f"parameters.{name}"
        if name not in known:
            raise err(file, where, f"unknown parameter for a {base.kind} target "
                       f"(known: {', '.join(known)})")
        out.append(_parameter(name, spec, base, grid, file, where))
    return tuple(out)


def _parameter(name: str, spec: Any, base: Any, grid: bool, file: str,
               where: str) -> Parameter:
    if isinstance(spec, list):
        return _listed(name, spec, base, file, where)
    if not isinstance(spec, dict):
        raise err(file, where, "expected a list of values, {range: [low, high], step|num}, "
                   f"{{uniform: [low, high]}} or {{loguniform: [low, high]}}; got "
                   f"{type(spec).__name__} {spec!r}")
    if "range" in spec:
        return _listed(name, _range_values(spec, file, where), base, file, where)
    return _distribution(name, spec, base, grid, file, where)


def _listed(name: str, values: list, base: Any, file: str, where: str) -> Parameter:
    if not values:
        raise err(file, where, "empty list of values")
    typed = tuple(check_value(base, name, x, file, f"{where}[{i}]")
                  for i, x in enumerate(values))
    # record values as the target holds them (64 -> 64.0 for a float field, defaults filled
    # in), so a point's id does not depend on how the YAML spelled it
    raw = tuple(to_raw(t) for t in typed)
    if len(set(map(canonical_json, raw))) != len(raw):
        raise err(file, where, f"repeated value in {values!r}")
    return Parameter(name, raw, typed, integer=field_is_integer(base, name))


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _bounds(v: Any, file: str, where: str) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2:
        raise err(file, where, f"expected [low, high], got {v!r}")
    lo, hi = (as_number(x, file, where) for x in v)
    if hi < lo:
        raise err(file, where, f"empty range: high {hi} < low {lo}")
    return lo, hi


def _range_values(spec: dict, file: str, where: str) -> list:
    spec = as_mapping(spec, file, where, ("range", "step", "num", "scale"))
    lo, hi = _bounds(spec["range"], file, f"{where}.range")
    if ("step" in spec) == ("num" in spec):
        raise err(file, where, "a range needs exactly one of step or num")
    if "step" in spec:
        step = as_number(spec["step"], file, f"{where}.step")
        if step <= 0:
            raise err(file, f"{where}.step", f"must be > 0, got {step}")
        count = math.floor(min((hi - lo) / step, MAX_VALUES) + 1e-9) + 1
        if count > MAX_VALUES:
            raise err(file, where, f"more than {MAX_VALUES} values; use a larger step")
        values = [lo + i * step for i in range(count)]
        integral = all(isinstance(x, int) for x in (lo, hi, step))
    else:
        count = as_int(spec["num"], file, f"{where}.num")
        if count > MAX_VALUES:
            raise err(file, f"{where}.num", f"at most {MAX_VALUES}, got {count}")
        scale = as_text(spec.get("scale", "linear"), file, f"{where}.scale", ("linear", "log"))
        if scale == "log" and lo <= 0:
            raise err(file, f"{where}.range", f"a log scale needs low > 0, got {lo}")
        values = list((np.geomspace if scale == "log" else np.linspace)(lo, hi, count))
        integral = isinstance(lo, int) and isinstance(hi, int)
    # round away float drift (0.1 * 3 = 0.30000000000000004) so values and point ids are clean
    values = [int(round(x)) if integral else float(f"{x:.12g}") for x in values]
    return list(dict.fromkeys(values))


def _distribution(name: str, spec: dict, base: Any, grid: bool, file: str,
                  where: str) -> Parameter:
    spec = as_mapping(spec, file, where, DISTRIBUTIONS)
    if len(spec) != 1:
        raise err(file, where, "expected one of a list, range, uniform or loguniform")
    (kind, bounds), = spec.items()
    if grid:
        raise err(file, where, f"a {kind} distribution needs search.method random or lhs")
    lo, hi = _bounds(bounds, file, f"{where}.{kind}")
    if kind == "loguniform" and lo <= 0:
        raise err(file, f"{where}.{kind}", f"needs low > 0, got {lo}")
    for x, end in ((lo, "low"), (hi, "high")):
        check_value(base, name, x, file, f"{where}.{kind} ({end})")
    return Parameter(name, low=lo, high=hi, log=kind == "loguniform",
                     integer=field_is_integer(base, name))
