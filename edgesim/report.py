"""What `compile` reports: `CompileResult` (report.json), report.md and pareto.png."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from compiler.atomic import atomic_write
from compiler.ir import Graph
from edgesim.allocation import AllocationResult
from edgesim.budget import UNITS, format_bytes
from edgesim.simulation import Totals
from hwmodels.cost import BOUND_NAMES, Cost
from hwmodels.target import Target

# display unit of each metric (the first unit budgets list): (unit, factor from base units)
DISPLAY = {metric: (unit or "bits", 1.0 / factor)
           for metric, (unit, factor) in ((m, next(iter(u.items()))) for m, u in UNITS.items())}


@dataclass(frozen=True)
class LayerRow:
    """One layer of the report."""

    name: str
    kind: str
    fn: str
    out_shape: tuple[int, ...]
    macs: int
    params: int
    w_bits: int
    a_bits: int
    format: str
    sensitivity: float | None
    cycles: float
    latency_ms: float
    energy_uj: float
    weight_bytes: float
    bound: str
    note: str
    sparsity: str = ""  # the threshold on the layer's input and its density (edgesim.sparsity)
    planned_kernel: str = ""      # the format policy's kernel (compiler.formats)
    onnxruntime_kernel: str = ""  # the kernel in onnxruntime's optimised graph
    block: int | None = None  # block length of a per-block weight (MatMulNBits, blocked DQ)


@dataclass(frozen=True)
class CompileResult:
    """Everything `edgesim compile` decided and measured; report.json holds the same fields."""

    model: str
    target: str
    target_kind: str
    method: str
    metric: str
    budget: str
    command: str
    versions: dict[str, str]
    calibration: dict[str, Any]
    fp32: Totals
    result: Totals
    avg_weight_bits: float
    file_bytes: int
    expected_bytes: int
    sensitivity: float
    fidelity: dict[str, Any]
    layers: tuple[LayerRow, ...]
    front: list[dict[str, float]]
    chosen: int
    marks: dict[str, list[float]]
    notes: tuple[str, ...]
    timings_s: dict[str, float]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def versions() -> dict[str, str]:
    """Versions of edgesim and what it ran with."""
    out = {"python": platform.python_version()}
    for pkg in ("edgesim", "numpy", "numba", "onnx", "onnxruntime", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _chosen_sens(alloc: AllocationResult, bits: np.ndarray, g: Graph) -> dict[str, float]:
    """Each quantisable layer's omega at its chosen bits (and block, where that was a
    choice); 0 at float32."""
    if alloc.block_omega is not None:
        return {name: float(v) for name, v in zip(alloc.sens.layers, alloc.block_omega)}
    column = {int(b): j for j, b in enumerate(alloc.sens.bits)}
    index = {layer.name: i for i, layer in enumerate(g.layers)}
    out = {}
    for i, name in enumerate(alloc.sens.layers):
        w = int(bits[index[name], 0])
        out[name] = 0.0 if w >= 32 else float(alloc.sens.omega[i, column[w]])
    return out


def _rows(g: Graph, alloc: AllocationResult, formats: dict[str, Any],
          folded: Mapping[str, str] = MappingProxyType({})) -> tuple[LayerRow, ...]:
    """A row per layer of the plan, but the `folded` ones the emitted file has no node for."""
    table, cost, bits = g.layer_table(), alloc.cost, alloc.bits
    assert cost.weight_bytes is not None  # Cost fills it
    chosen = _chosen_sens(alloc, bits, g)
    rows = []
    for i, layer in enumerate(g.layers):
        if layer.name in folded:
            continue
        w = int(bits[i, 0])
        sens = chosen.get(layer.name)
        fmt = formats.get(layer.name)
        rows.append(LayerRow(
            name=layer.name, kind=layer.kind, fn=str(layer.attrs.get("fn", "")),
            out_shape=g.types[layer.outputs[0]].shape, macs=int(table.macs[i]),
            params=int(table.w_elems[i]), w_bits=w, a_bits=int(bits[i, 1]),
            format=fmt.format if fmt else "float", sensitivity=sens,
            cycles=float(cost.cycles[i, 0]), latency_ms=float(cost.latency_s[i, 0]) * 1e3,
            energy_uj=float(cost.energy_pj[i, 0]) * 1e-6,
            weight_bytes=float(cost.weight_bytes[i, 0]),
            bound=BOUND_NAMES[int(cost.bound[i, 0])], note=fmt.reason if fmt else "",
            planned_kernel=fmt.planned_kernel if fmt else "",
            onnxruntime_kernel=fmt.onnxruntime_kernel if fmt else "",
            block=fmt.block if fmt and fmt.granularity == "per_block" else None))
    return tuple(rows)


def _display(metric: str, value: float) -> float:
    return value * DISPLAY[metric][1]


def front_points(alloc: AllocationResult) -> tuple[list[dict[str, float]],
                                                 dict[str, list[float]]]:
    """The front (metric in its display unit, sensitivity) and the marked points, as the
    report and pareto.png show them."""
    unit = DISPLAY[alloc.metric][0]
    front = [{f"{alloc.metric}_{unit.lower()}": _display(alloc.metric, c), "sensitivity": s}
             for c, s in alloc.front]
    marks = {k: [_display(alloc.metric, c), s] for k, (c, s) in alloc.marks.items()}
    return front, marks


def energy_note(fp32: Totals, result: Totals, cost: Cost) -> tuple[str, ...]:
    """Why a plan's predicted energy exceeds fp32's, when it does: the plan's DRAM share
    (`cost`: the plan's per-layer costs). PicoDet at 800x608 on rpi5, uniform W8A8: 494.6 ->
    499.1 mJ while latency falls 12 %, DRAM 96 % of it: the QuantizeLinear / DequantizeLinear
    passes between its int8 convs and float hard-swish ops move more bytes than int8 saves."""
    if result.energy_mj <= fp32.energy_mj:
        return ()
    share = float(np.sum(cost.energy_pj_dram)) / max(float(np.sum(cost.energy_pj)), 1e-30)
    return (f"predicted energy rises over fp32 ({fp32.energy_mj:.4g} -> {result.energy_mj:.4g} "
            f"mJ): DRAM traffic is {share:.0%} of it, and the passes quantised layers add "
            f"(QuantizeLinear / DequantizeLinear between quantised and float layers, weight "
            f"dequantisation) move DRAM bytes their kernels do not save back (an energy budget "
            f"prices them)",)


def folded_note(folded: Mapping[str, str]) -> tuple[str, ...]:
    """One line naming the layers the emitted file has no node for (not report rows)."""
    if not folded:
        return ()
    pairs = ", ".join(f"{layer} into {into}" for layer, into in folded.items())
    return (f"{len(folded)} layer(s) folded into their producer (the file has no node for "
            f"them: their input grid already holds their output): {pairs}",)


def build_result(g: Graph, target: Target, alloc: AllocationResult, quant: Any,
                 fidelity: dict[str, Any], baseline: Any, data: Any, options: Any,
                 outdir: Path, timings: dict[str, float]) -> CompileResult:
    """Assemble the report of one compile run."""
    rows = _rows(g, alloc, {r.name: r for r in quant.layers}, quant.folded)
    q = [r for r in rows if r.sensitivity is not None]
    assert alloc.cost.act_bytes is not None  # Cost fills it
    params = sum(r.params for r in q)
    avg_bits = sum(min(r.w_bits, 32) * r.params for r in q) / max(params, 1)
    result = Totals(sum(r.latency_ms for r in rows), sum(r.energy_uj for r in rows) * 1e-3,
                    sum(r.weight_bytes for r in rows), float(alloc.cost.act_bytes.max()))
    fp32 = baseline  # simulate.totals of the float assignment
    unit = DISPLAY[alloc.metric][0]
    budget = (f"{alloc.metric}={_display(alloc.metric, alloc.budget):.4g}"
              f"{unit if alloc.metric != 'bits' else ''}"
              if alloc.budget is not None else f"knee of the {alloc.metric}-sensitivity front")
    front, marks = front_points(alloc)
    names = {"model": f"model.{target.name}.onnx", "report_json": "report.json",
             "report_md": "report.md", "pareto_png": "pareto.png",
             "layers_png": "layers.png", "report_html": "report.html"}
    return CompileResult(
        model=g.name, target=target.name, target_kind=target.kind, method=alloc.sens.method,
        metric=alloc.metric, budget=budget, command=options.command, versions=versions(),
        calibration={"source": data.source, "samples": data.count, "random": data.random},
        fp32=fp32, result=result, avg_weight_bits=avg_bits, file_bytes=quant.file_bytes,
        expected_bytes=quant.expected_bytes, sensitivity=alloc.sensitivity,
        fidelity=fidelity, layers=rows, front=front, chosen=alloc.chosen, marks=marks,
        notes=tuple(dict.fromkeys(alloc.notes + g.notes + quant.notes  # once each, in order
                                  + energy_note(fp32, result, alloc.cost)
                                  + folded_note(quant.folded))),
        timings_s=dict(timings), files={k: str(outdir / v) for k, v in names.items()})


def write_reports(r: CompileResult, alloc: AllocationResult, folder: Path) -> None:
    """report.json, report.md and report.html (one self-contained page, embedding the plots
    already written there) into `folder` (a staging folder)."""
    from edgesim.report_html import render

    atomic_write(folder / "report.json", json.dumps(r.to_dict(), indent=1, default=_json))
    atomic_write(folder / "report.md", markdown(r))
    images = {"Pareto front": (folder / "pareto.png").read_bytes(),
              "Per layer": (folder / "layers.png").read_bytes()}
    atomic_write(folder / "report.html", render(_summary(r), r.layers, images))


def _json(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


def alloc_title(method: str, metric: str) -> str:
    """What pareto.png's title says after the model and target."""
    return f"{method} sensitivity vs {metric}"


def planned_rows(g: Graph, alloc: AllocationResult) -> tuple[LayerRow, ...]:
    """The report's layer rows as the allocation alone gives them (every format "float"):
    what layers.png shows unless a later step re-costs the layers."""
    return _rows(g, alloc, {})


def front_job(model: str, target: Target, alloc: AllocationResult, path: Path) -> Any:
    """pareto.png's job (`report_plots`) as soon as the allocation is chosen: the front,
    marks and chosen point that report.json lists."""
    from edgesim.report_plots import front_job as job

    front, marks = front_points(alloc)
    return job(model, target.name, alloc_title(alloc.sens.method, alloc.metric), front, marks,
               alloc.chosen, path)


_FIDELITY_TEXT = {"cosine": "cosine {cosine:.5f}",
                  "top1_agreement": "top-1 agreement {top1_agreement:.4f}",
                  "label_agreement": "label agreement {label_agreement:.4f}",
                  "sqnr_db": "SQNR {sqnr_db:.1f} dB"}


def _fidelity_text(fid: dict[str, Any]) -> str:
    """The metrics that fit the output, the primary one first; accuracy against labels last."""
    metric = fid.get("metric", "cosine")
    first = [f"{metric} {fid['value']:.5f}"] if metric not in _FIDELITY_TEXT else []
    order = sorted(_FIDELITY_TEXT, key=lambda k: k != metric)
    parts = first + [_FIDELITY_TEXT[k].format(**fid) for k in order if fid.get(k) is not None]
    if fid.get("accuracy") is not None and fid.get("fp32_accuracy") is not None:
        parts.append(f"accuracy {fid['accuracy']:.4f} (fp32 {fid['fp32_accuracy']:.4f})")
    return ", ".join(parts)


def _summary(r: CompileResult) -> list[str]:
    f, t = r.fp32, r.result
    fid = r.fidelity
    lines = [
        f"# {r.model} on {r.target} ({r.target_kind})", "",
        f"- method: **{r.method}**, budget: **{r.budget}**",
        f"- predicted latency: {f.latency_ms:.4g} ms -> **{t.latency_ms:.4g} ms**",
        f"- predicted energy: {f.energy_mj:.4g} mJ -> **{t.energy_mj:.4g} mJ**",
        f"- weights: {format_bytes(f.weight_bytes)} -> **{format_bytes(t.weight_bytes)}** "
        f"(average {r.avg_weight_bits:.2f} bits; file {format_bytes(r.file_bytes)}, expected "
        f"{format_bytes(r.expected_bytes)})",
        f"- fidelity in onnxruntime on {fid['samples']} samples of {fid['data']} "
        f"({fid.get('output_kind', 'tensor')} output {fid['output']}): " + _fidelity_text(fid),
        *_other_outputs(fid),
        f"- calibration: {r.calibration['source']}",
    ] + _kernel_summary(r)
    return lines + collapse_warning(fid) + [f"- note: {n}" for n in r.notes]


def _other_outputs(fid: dict[str, Any]) -> list[str]:
    """One line per other scored output (`measure_fidelity`'s "other_outputs"), so the report
    shows the figure --min-fidelity may have compared."""
    return [f"- fidelity of {o.get('output_kind', 'tensor')} output {t}: " + _fidelity_text(o)
            for t, o in fid.get("other_outputs", {}).items()]


def collapse_warning(fidelity: dict[str, Any]) -> list[str]:
    """A loud line when the emitted model no longer agrees with fp32 (see --min-fidelity)."""
    from edgesim.fidelity import collapse

    why = collapse(fidelity)
    if why is None:
        return []
    return [f"- **WARNING: fidelity collapsed**: {why}; this plan "
            "destroys the model's predictions (pass --min-fidelity to fail such runs)"]


def _kernel_summary(r: CompileResult) -> list[str]:
    """One line: how many layers' onnxruntime kernels were checked against the plan."""
    checked = [x for x in r.layers if x.planned_kernel]
    if not checked:
        return []
    bad = [x.name for x in checked if _kernels(x).endswith("**MISMATCH**")]
    return [f"- kernel check: {len(checked)} layers against onnxruntime's optimised graph, "
            f"{len(bad)} mismatches" + (f" ({', '.join(bad[:3])})" if bad else "")]


def _kernels(x: LayerRow) -> str:
    """"planned / onnxruntime" (flagged when they differ), or "" for unchecked layers."""
    if not x.planned_kernel:
        return ""
    ran = x.onnxruntime_kernel or "(fused)"
    same = x.planned_kernel == x.onnxruntime_kernel or (
        x.planned_kernel == "fp32" and not x.onnxruntime_kernel)
    return f"{x.planned_kernel} / {ran}" + ("" if same else " **MISMATCH**")


def markdown(r: CompileResult) -> str:
    """report.md: the summary first, then the layer table."""
    sparse = any(x.sparsity for x in r.layers)  # the column only when --sparsity was used
    lines = _summary(r) + ["", "| layer | kind | out shape | MACs | params | bits w/a | format "
                           "| kernel planned / onnxruntime | sensitivity | latency ms "
                           "| energy uJ | bound |" + (" sparsity |" if sparse else ""),
                           "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * sparse]
    for x in r.layers:
        bits = "fp32" if (x.w_bits, x.a_bits) == (32, 32) else f"{x.w_bits}/{x.a_bits}"
        sens = "" if x.sensitivity is None else f"{x.sensitivity:.3g}"
        kind = f"{x.kind}:{x.fn}" if x.fn else x.kind
        fmt = f"{x.format} b{x.block}" if x.block else x.format  # b64: MatMulNBits block 64
        lines.append(f"| {x.name} | {kind} | {x.out_shape} | {x.macs} | {x.params} | {bits} | "
                     f"{fmt} | {_kernels(x)} | {sens} | {x.latency_ms:.4g} | "
                     f"{x.energy_uj:.4g} | {x.bound} |" + (f" {x.sparsity} |" if sparse else ""))
    return "\n".join(lines) + "\n"

