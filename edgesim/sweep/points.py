"""Points of a design space: enumeration, stable ids, and the fingerprint a resume checks.

Enumeration (all seeded, reproducible from this description):
- grid: `itertools.product` of the parameters in file order, each in its listed order.
- random: `numpy.random.default_rng(seed)`; point by point, parameter by parameter in file
  order, a list draws `rng.integers(len)` and a distribution `rng.random()` (so the first n
  points of a longer sample are the n-point sample).
- lhs (Latin hypercube, McKay, Beckman & Conover 1979): per parameter in file order,
  `u = (rng.permutation(n) + rng.random(n)) / n`, one draw in each of n equal strata; a list
  takes `values[floor(u * len)]`, a distribution its quantile at u.
A distribution maps u in [0, 1) to `low + u (high - low)` (log: geometrically); integer
fields take `low + floor(u (high - low + 1))` (log: rounded). Duplicate points are kept once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesim.sweep.parameters import Parameter, canonical_json
from edgesim.sweep.space import Search, Space


@dataclass(frozen=True)
class Point:
    """One design: `params` as written (JSON-able, in file order) and as the target holds them."""

    index: int
    id: str
    params: tuple[tuple[str, Any], ...]
    typed: tuple[tuple[str, Any], ...]


def point_id(params: Mapping[str, Any]) -> str:
    """A stable id of a point: sha256 of its parameters as canonical JSON (16 hex digits)."""
    return hashlib.sha256(canonical_json(dict(params)).encode()).hexdigest()[:16]


def fingerprint(space: Space) -> str:
    """What a point's result depends on besides its parameters: the base target, the models,
    what is optimised and the CPU options (sha256 of canonical JSON). Resuming needs it equal."""
    from edgesim import __version__
    from edgesim.sweep.kinds import fingerprint_target, model_digest

    doc = {"base": fingerprint_target(space.base), "optimise": repr(space.optimise),
           "models": [[m.ref, m.input_shapes, model_digest(m.ref)] for m in space.models],
           "runtime": space.runtime, "threads": space.threads, "edgesim": __version__}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _grid(params: Sequence[Parameter], search: Search) -> list[list[Any]]:
    return [list(c) for c in itertools.product(*(range(len(p.raw)) for p in params))]


def _random(params: Sequence[Parameter], search: Search) -> list[list[Any]]:
    rng = np.random.default_rng(search.seed)
    assert search.samples is not None  # random search is validated to have a sample count
    return [[int(rng.integers(len(p.raw))) if p.discrete else float(rng.random())
             for p in params] for _ in range(search.samples)]


def _lhs(params: Sequence[Parameter], search: Search) -> list[list[Any]]:
    """Latin-hypercube quantiles from scipy.stats.qmc: one sample in each of n strata per
    parameter; a list parameter takes the value its quantile falls on."""
    from scipy.stats import qmc

    assert search.samples is not None  # lhs search is validated to have a sample count
    if not params:
        return [[] for _ in range(search.samples)]
    u = qmc.LatinHypercube(d=len(params), rng=np.random.default_rng(search.seed)).random(
        search.samples)
    columns = [[int(x) for x in np.minimum(np.floor(u[:, j] * len(p.raw)), len(p.raw) - 1)]
               if p.discrete else [float(x) for x in u[:, j]] for j, p in enumerate(params)]
    return [list(row) for row in zip(*columns)]


# A draw is an index into a list parameter's values, or a quantile u for a distribution.
_ENUMERATORS: dict[str, Callable[[Sequence[Parameter], Search], list[list[Any]]]] = {
    "grid": _grid, "random": _random, "lhs": _lhs,
}


def _value(p: Parameter, draw: Any) -> tuple[Any, Any]:
    """(as written, as typed) for one draw of parameter p."""
    if p.discrete:
        return p.raw[draw], p.typed[draw]
    x = p.at(draw)
    return x, x


def enumerate_points(space: Space) -> list[Point]:
    """Every point of the space, in enumeration order, duplicates dropped (first kept)."""
    names = [p.name for p in space.parameters]
    seen: set[str] = set()
    out: list[Point] = []
    for draws in _ENUMERATORS[space.search.method](space.parameters, space.search):
        pairs = [_value(p, d) for p, d in zip(space.parameters, draws)]
        params = tuple(zip(names, (raw for raw, _ in pairs)))
        pid = point_id(dict(params))
        if pid not in seen:
            seen.add(pid)
            out.append(Point(len(out), pid, params, tuple(zip(names, (t for _, t in pairs)))))
    return out
