"""The Python API; each CLI subcommand is a thin layer over one function here."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from compiler.ir import Graph
from edgesim.errors import UserError

ZOO_PREFIX = "zoo:"


def zoo_model(name: str) -> Any:
    """Build the zoo model `name` (an onnx.ModelProto)."""
    from edgesim import zoo

    if name not in zoo.ZOO:
        raise UserError(f"{ZOO_PREFIX}{name}", f"no such zoo model; choose from {sorted(zoo.ZOO)}")
    return zoo.build(name)


@dataclass(frozen=True)
class LayerSummary:
    """One row of `inspect`: what a layer is and what it costs in the abstract."""

    name: str
    kind: str
    detail: str          # e.g. the eltwise/activation function
    out_shape: tuple[int, ...]
    macs: int
    params: int
    in_bytes: int
    out_bytes: int


@dataclass(frozen=True)
class Inspection:
    """Result of `inspect`: per-layer rows and totals of a lowered model."""

    model: str
    notes: tuple[str, ...]
    layers: tuple[LayerSummary, ...]
    total_macs: int
    total_params: int
    weight_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def load_graph(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Load an ONNX path, `zoo:NAME`, ModelProto or already lowered `Graph` into the IR."""
    if isinstance(model, Graph):
        return model
    from compiler.frontend import load

    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        return load(zoo_model(model[len(ZOO_PREFIX):]), input_shapes)
    if isinstance(model, str | os.PathLike) and not os.path.exists(model):
        raise UserError(str(model), "no such file")
    return load(model, input_shapes)


def resolve_target(target: Any) -> Any:
    """A shipped target name, a YAML path, or an already loaded target object."""
    from hwmodels.target import load_target

    return load_target(target) if isinstance(target, str | os.PathLike) else target


@dataclass(frozen=True)
class TargetInfo:
    """One shipped target, as `edgesim targets` lists it."""

    name: str
    kind: str
    description: str
    file: str


def targets() -> list[TargetInfo]:
    """Every shipped target (targets/*.yaml)."""
    from hwmodels.target import list_targets, load_target

    out = []
    for name in list_targets():
        t = load_target(name)
        out.append(TargetInfo(name, t.kind, t.description, f"targets/{name}.yaml"))
    return out


def probe_target(output: str | os.PathLike) -> Any:
    """Measure this machine, write it as a `cpu` target YAML (atomically) and return it."""
    from hwmodels.probe import probe_host, write_target_yaml

    target = probe_host()
    write_target_yaml(target, output)
    return target


def simulate(model: Any, target: Any, *, bits: Any = "fp32", threads: int | None = None,
             runtime: str = "onnxruntime",
             input_shapes: Mapping[str, Sequence[int]] | None = None) -> Any:
    """Predict per-layer and total latency, energy and memory of `model` on `target`.

    Args:
        model: ONNX path, `zoo:NAME`, ModelProto or Graph.
        target: shipped target name, YAML path or target object.
        bits: "fp32", a bit width (8 = W8A8, 4 = W4 weight-only), a JSON path, a mapping
            {layer: bits} or an int array [L, 2] of (w_bits, a_bits).
        threads: CPU threads (default: all cores of the target).
        runtime: "onnxruntime" (the kernels onnxruntime takes) or "ideal" (best the ISA allows).

    Returns:
        An `edgesim.simulate.Simulation`.
    """
    from edgesim import assignment
    from edgesim.simulate import simulate_graph

    if runtime not in ("onnxruntime", "ideal"):
        raise UserError("--runtime", f"must be onnxruntime or ideal, got {runtime!r}")
    g = load_graph(model, input_shapes)
    return simulate_graph(g, resolve_target(target), assignment.resolve(g, bits),
                          threads=threads, runtime=runtime)


def inspect(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Inspection:
    """Lower `model` and summarise every layer (op, output shape, MACs, params, bytes)."""
    g = load_graph(model, input_shapes)
    t = g.layer_table()
    rows = tuple(
        LayerSummary(
            name=layer.name, kind=layer.kind, detail=str(layer.attrs.get("fn", "")),
            out_shape=g.types[layer.outputs[0]].shape, macs=int(t.macs[i]),
            params=int(t.w_elems[i]), in_bytes=int(t.in_bytes[i]), out_bytes=int(t.out_bytes[i]),
        )
        for i, layer in enumerate(g.layers)
    )
    params = sum(w.size for w in g.weights.values() if w.dtype.kind == "f")
    wbytes = sum(w.nbytes for w in g.weights.values())
    return Inspection(g.name, g.notes, rows, int(t.macs.sum()), int(params), int(wbytes))


def example_inputs() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The shipped example: the trained digits CNN, its calibration split and test split."""
    from edgesim.zoo import load_digits_data

    d = load_digits_data()
    return ("zoo:digits_cnn", {"input": d["x_calib"], "labels": d["y_calib"]},
            {"input": d["x_test"], "labels": d["y_test"]})


def compile(model: Any, target: Any = "rpi5", *, outdir: str | os.PathLike = "edgesim-out",
            calib: Any = None, calib_random: int | None = None, eval_data: Any = None,
            method: str = "hawq", budget: str | None = None,
            weight_bits: Sequence[int] = (2, 3, 4, 6, 8), act_bits: Sequence[int] | None = None,
            threads: int | None = None, runtime: str = "onnxruntime",
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            quiet: bool = True, analysis_budget_s: float | None = None) -> Any:
    """Compile `model` for `target`: choose bits per layer, emit the packed model and reports.

    Mirrors `edgesim compile`; returns an `edgesim.report.CompileResult` (the fields of
    report.json). `budget` is e.g. "size=2MB", "latency=15ms", "energy=5mJ" or "bits=4.5";
    None picks the knee of the Pareto front. `calib` is a .npz path or a mapping of arrays by
    input name (with optional "labels"). `analysis_budget_s` bounds the HAWQ analysis's time
    (its precision reached is in the report's notes).
    """
    from edgesim.budget import parse_budget
    from edgesim.pipeline import CompileOptions, compile_model

    options = CompileOptions(
        method=method, budget=None if budget is None else parse_budget(budget),
        weight_bits=tuple(weight_bits), act_bits=None if act_bits is None else tuple(act_bits),
        threads=threads, runtime=runtime, input_shapes=input_shapes, quiet=quiet,
        command="edgesim.compile(...)", analysis_budget_s=analysis_budget_s)
    return compile_model(model, target, outdir, calib=calib, calib_random=calib_random,
                         eval_data=eval_data, options=options)


def evaluate_model(model: str | os.PathLike, data: str | os.PathLike, *,
                   threads: int | None = None, runs: int = 30) -> dict[str, Any]:
    """Run an ONNX model in onnxruntime on a .npz (keyed by input name, optional labels):
    accuracy (with labels) and latency measured here (median, p90)."""
    import numpy as np

    from edgesim.evaluate import evaluate_model as run_and_time

    if not os.path.exists(model):
        raise UserError(str(model), "no such file")
    try:
        with np.load(data, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise UserError(str(data), f"not a readable .npz file ({e})") from None
    labels = arrays.pop("labels", None)
    return run_and_time(model, arrays, labels, threads=threads, runs=runs)


def allocate(graph: Graph, target: Any, **kwargs: Any) -> Any:
    """Bits per layer for a budget, exactly, with the front: `edgesim.allocation.allocate`
    (imported on first use: the solver pulls in scipy and numba)."""
    from edgesim.allocation import allocate as solve_allocation

    return solve_allocation(graph, resolve_target(target), **kwargs)

