"""Design spaces: parse and check a space YAML (`edgesim.sweep.points` enumerates them).

A space file names a base target, the target fields to vary, the search, the models and what to
optimise per design. Every key is checked; an unknown, missing, empty or mistyped one raises
`UserError("<file>: <dotted field>", what)` (one line from the CLI, exit 2).

    name: macarray-example           # optional; default: the file's stem
    base: systolic-16x16             # shipped target name or YAML path (relative to this file)
    parameters:                      # target fields to vary; each is one of
      rows: [8, 16, 32]              #   a list of values (any field, even `precisions`)
      cols: {range: [8, 64], step: 8}                          # inclusive arithmetic range
      ifmap_sram_kib: {range: [64, 1024], num: 5, scale: log}  # num values, linear or log
      clock_ghz: {uniform: [0.2, 1.0]}                         # continuous: random / lhs only
      dram_bandwidth_gbps: {loguniform: [2, 32]}
    search: {method: lhs, samples: 1000, seed: 0}   # grid (no samples) | random | lhs
    models: [zoo:resnet50, a.onnx, {model: b.onnx, input_shapes: {x: [1, 3, 224, 224]}}]
    optimise: {bits: {w_bits: 8, a_bits: 8}}        # fixed bits, or per design the least
    # sensitive allocation within a budget (see `Allocate`):
    # optimise: {allocate: {metric: size, fraction: 0.5, w_bits: [2, 4, 8], a_bits: 8}}
    #   or {allocate: {budget: latency=15ms}} (the syntax of `edgesim compile --budget`)
    runtime: onnxruntime             # bases with runtimes only (cpu: onnxruntime | ideal | ...)
    threads: 4                       # bases with host threads only (default: all cores)

Each value is checked by building the base target with it and validating that through
`hwmodels.target.target_from_dict`, so a space accepts exactly what a target file accepts.
CPU bases also take `dram_gbps` (sustained DRAM bandwidth; see `hwmodels.cpu.variants`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesim.errors import UserError
from edgesim.sweep.checks import as_int, as_mapping, as_number, as_text, err
from edgesim.sweep.kinds import load_base
from edgesim.sweep.parameters import Parameter, parameters
from hwmodels import kinds

SEARCH_METHODS = ("grid", "random", "lhs")
METRICS = ("size", "latency", "energy", "bits")  # as edgesim.budget
_TOP_KEYS = ("name", "base", "parameters", "search", "models", "optimise", "runtime", "threads")


@dataclass(frozen=True)
class Search:
    """How points are drawn: `method` in SEARCH_METHODS, `samples` for random/lhs, `seed`."""

    method: str = "grid"
    samples: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: `ref` is `zoo:NAME` or an ONNX path (resolved against the space)."""

    ref: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def label(self) -> str:
        return self.ref[len("zoo:"):] if self.ref.startswith("zoo:") else Path(self.ref).stem


@dataclass(frozen=True)
class FixedBits:
    """Every weighted conv/linear/matmul at (w_bits, a_bits)."""

    w_bits: int = 8
    a_bits: int = 8


@dataclass(frozen=True)
class Allocate:
    """Per design, the least sensitive weight-bit allocation with `metric` within a budget.

    Metrics are those of `edgesim compile --budget` (`edgesim.budget`): size (weight bytes),
    latency (seconds), energy (picojoules), bits (mean weight bits per parameter of the
    chosen layers). The budget is `value` in those base units (written `budget: size=12MB`),
    or `fraction` of the metric with every layer at its widest runnable choice (written
    `metric: size, fraction: 0.5`). Activations run at `a_bits`.
    """

    metric: str
    w_bits: tuple[int, ...] = (2, 3, 4, 6, 8)
    a_bits: int = 8
    fraction: float | None = None
    value: float | None = None


@dataclass(frozen=True)
class Space:
    """A parsed, checked design space."""

    file: str
    name: str
    base: Any
    parameters: tuple[Parameter, ...]
    search: Search
    models: tuple[ModelSpec, ...]
    optimise: FixedBits | Allocate
    runtime: str = "onnxruntime"
    threads: int | None = None

    @property
    def kind(self) -> str:
        return self.base.kind


MAX_POINTS = 1_000_000  # points of a space, checked before it is enumerated


def shipped_spaces() -> list[str]:
    """Names of the shipped sweep spaces (`targets/spaces/*.yaml`)."""
    from hwmodels.target import shipped_dir

    return sorted(p.stem for p in (shipped_dir() / "spaces").glob("*.yaml"))


def resolve_space(name_or_path: str | Path) -> Path:
    """A space file: an existing path, or a shipped space by name (`macarray`) from any
    folder."""
    from hwmodels.target import shipped_dir

    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    shipped = shipped_dir() / "spaces" / f"{path.name}.yaml"
    if not shipped.is_file():
        raise err(str(name_or_path), "(top)", "no such file or shipped space; shipped: "
                   f"{', '.join(shipped_spaces())}")
    return shipped


def load_space(path: str | Path) -> Space:
    """Read, parse and check a space YAML file (or a shipped space by name).

    Raises:
        UserError: naming the file and the dotted field of the first problem.
    """
    path = resolve_space(path)
    file = str(path)
    from hwmodels.target import TargetError, read_yaml

    try:
        raw = read_yaml(path, file)  # bounded size, depth and length; no aliases
    except TargetError as e:
        raise err(file, "(top)", e.what) from None
    return space_from_dict(raw, file, Path(path).resolve().parent)


def space_from_dict(raw: Any, file: str, root: Path) -> Space:
    """Check an already parsed space; `file` labels errors, `root` resolves relative paths."""
    raw = as_mapping(raw, file, "(top)", _TOP_KEYS)
    for key in ("base", "parameters", "models"):
        if key not in raw:
            raise err(file, key, "missing")
    base = load_base(as_text(raw["base"], file, "base"), root, file)
    search = _search(raw.get("search", {"method": "grid"}), file)
    params = parameters(raw["parameters"], base, search.method == "grid", file)
    if search.method == "grid" and math.prod(len(p.raw) for p in params) > MAX_POINTS:
        raise err(file, "parameters", f"the grid has {math.prod(len(p.raw) for p in params)} "
                   f"points; at most {MAX_POINTS} (use search: lhs or random with samples)")
    runtime, threads = _cpu_options(raw, base, file)
    return Space(file=file, name=as_text(raw.get("name", Path(file).stem), file, "name"),
                 base=base, parameters=params, search=search,
                 models=_models(raw["models"], file, root),
                 optimise=_optimise(raw.get("optimise", {"bits": {}}), file),
                 runtime=runtime, threads=threads)


def _search(v: Any, file: str) -> Search:
    v = as_mapping(v, file, "search", ("method", "samples", "seed"))
    method = as_text(v.get("method", "grid"), file, "search.method", SEARCH_METHODS)
    seed = as_int(v.get("seed", 0), file, "search.seed", low=0)
    if method == "grid":
        if "samples" in v:
            raise err(file, "search.samples", "a grid takes every point; samples is for "
                       "random or lhs")
        return Search(method, None, seed)
    if "samples" not in v:
        raise err(file, "search.samples", f"missing (required by method {method})")
    samples = as_int(v["samples"], file, "search.samples")
    if samples > MAX_POINTS:
        raise err(file, "search.samples", f"at most {MAX_POINTS}, got {samples}")
    return Search(method, samples, seed)


def _models(v: Any, file: str, root: Path) -> tuple[ModelSpec, ...]:
    if not isinstance(v, list) or not v:
        raise err(file, "models", "expected a non-empty list of zoo:NAME or ONNX paths")
    models = tuple(_model(m, file, f"models[{i}]", root) for i, m in enumerate(v))
    labels = [m.label for m in models]
    for i, label in enumerate(labels):
        if label in labels[:i]:  # records key the figures by label
            raise err(file, f"models[{i}]", f"a second model named {label!r}")
    return models


def _model(v: Any, file: str, where: str, root: Path) -> ModelSpec:
    if isinstance(v, str):
        v = {"model": v}
    v = as_mapping(v, file, where, ("model", "input_shapes"))
    ref = as_text(v.get("model"), file, f"{where}.model")
    if ref.startswith("zoo:"):
        from edgesim import zoo

        if ref[4:] not in zoo.ZOO:
            raise err(file, f"{where}.model", f"no zoo model {ref[4:]!r}; choose from "
                       f"{sorted(zoo.ZOO)}")
    else:
        path = (root / ref).resolve()
        if not path.is_file():
            raise err(file, f"{where}.model", f"no such file {path}")
        ref = str(path)
    return ModelSpec(ref, _input_shapes(v.get("input_shapes", {}), file, where))


def _input_shapes(v: Any, file: str, where: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if not isinstance(v, dict):
        raise err(file, f"{where}.input_shapes", "expected a mapping {input: [dims]}")
    out = []
    for name, dims in v.items():
        at = f"{where}.input_shapes.{name}"
        if not isinstance(dims, list) or not dims:
            raise err(file, at, f"expected a list of dimensions, got {dims!r}")
        out.append((str(name), tuple(as_int(d, file, at) for d in dims)))
    return tuple(out)


def _optimise(v: Any, file: str) -> FixedBits | Allocate:
    v = as_mapping(v, file, "optimise", ("bits", "allocate"))
    if len(v) != 1:
        raise err(file, "optimise", "expected exactly one of bits or allocate")
    if "bits" in v:
        b = as_mapping(v["bits"] or {}, file, "optimise.bits", ("w_bits", "a_bits"))
        return FixedBits(_bits(b.get("w_bits", 8), file, "optimise.bits.w_bits"),
                         _bits(b.get("a_bits", 8), file, "optimise.bits.a_bits"))
    return _allocate(v["allocate"], file)


def _bits(v: Any, file: str, where: str, valid: Sequence[int] = (2, 3, 4, 5, 6, 7, 8, 16, 32)
          ) -> int:
    b = as_int(v, file, where)
    if b not in valid:
        raise err(file, where, f"must be one of {list(valid)}, got {b}")
    return b


def _allocate(v: Any, file: str) -> Allocate:
    at = "optimise.allocate"
    v = as_mapping(v, file, at, ("metric", "fraction", "budget", "w_bits", "a_bits"))
    if ("fraction" in v) == ("budget" in v):
        raise err(file, at, "give exactly one of budget (e.g. size=12MB) or metric + fraction")
    if "budget" in v:
        metric, value, fraction = *_budget(v, file, f"{at}.budget"), None
    else:
        if "metric" not in v:
            raise err(file, f"{at}.metric", f"missing (one of {list(METRICS)})")
        metric, value = as_text(v["metric"], file, f"{at}.metric", METRICS), None
        fraction = as_number(v["fraction"], file, f"{at}.fraction")
        if fraction <= 0:
            raise err(file, f"{at}.fraction", f"must be > 0, got {fraction}")
    w_bits = v.get("w_bits", [2, 3, 4, 6, 8])
    if not isinstance(w_bits, list) or not w_bits or len(set(map(str, w_bits))) != len(w_bits):
        raise err(file, f"{at}.w_bits", f"expected a list of distinct widths, got {w_bits!r}")
    widths = tuple(_bits(b, file, f"{at}.w_bits[{i}]", range(2, 9)) for i, b in enumerate(w_bits))
    return Allocate(metric, widths, _bits(v.get("a_bits", 8), file, f"{at}.a_bits"),
                    fraction=None if fraction is None else float(fraction), value=value)


def _budget(v: dict, file: str, where: str) -> tuple[str, float]:
    """(metric, value in base units) of `budget: size=12MB`, as `edgesim compile --budget`."""
    from edgesim.budget import parse_budget

    try:
        budget = parse_budget(as_text(v["budget"], file, where))
    except UserError as e:
        raise err(file, where, e.what) from None
    if v.get("metric", budget.metric) != budget.metric:
        raise err(file, where, f"is a {budget.metric} budget but metric says {v['metric']!r}")
    return budget.metric, budget.value


def _cpu_options(raw: dict, base: Any, file: str) -> tuple[str, int | None]:
    """`runtime` and `threads`: only for bases whose kind's capabilities take them."""
    caps = kinds.capabilities(base)
    for key, applies in (("runtime", bool(caps.runtimes)), ("threads", caps.threads)):
        if key in raw and not applies:
            raise err(file, key, f"not for {base.kind} bases: their cost does not depend on "
                       f"a host {key}")
    runtime = as_text(raw.get("runtime", "onnxruntime"), file, "runtime",
                   caps.runtimes or ("onnxruntime",))
    threads = raw.get("threads")
    return runtime, None if threads is None else as_int(threads, file, "threads")
