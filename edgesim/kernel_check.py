"""Kernel check: does onnxruntime run each layer with the kernel the plan says?

After emission the model is loaded in onnxruntime with full graph optimisation and its
optimised graph is saved (`SessionOptions.optimized_model_filepath`) and read back. Every
compute node of that graph (Conv, QLinearConv, MatMulNBits, ...) is mapped to the IR layer it
came from by name (onnxruntime keeps the emitted node's name as a prefix of the fused node's,
and the emitter names each layer's node after the layer), and its kernel is compared with the
kernel of the layer's row of the format policy (`compiler.formats`).

onnxruntime's x86-only NCHWc layout transformer is disabled: it renames convolutions after
their outputs, and the Arm targets edgesim models do not run it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from compiler.emit.builder import EmitOptions
from compiler.formats import BY_NAME, FLOAT_BITS, FORMAT_CODE, FORMATS, NO_FORMAT, Format, of_layer
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer
from edgesim.errors import UserError
from hwmodels.cost import BOUND_NAMES, Cost, evaluate
from hwmodels.target import Target

FP32 = "fp32"
# Float compute nodes (after onnxruntime's activation and bias fusions): one label, fp32.
FLOAT_OPS = frozenset({"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm",
                       "FusedGemm", "Gather", "Attention", "MultiHeadAttention"})
INTEGER_OPS = frozenset({"QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat",
                         "DynamicQuantizeMatMul", "ConvInteger", "MatMulInteger",
                         "GatherBlockQuantized", "QGemm", "QLinearConvTranspose"})
CHECKED_KINDS = ("gather",)  # besides the MAC layers
# Recurrent nodes edgesim unrolls into layers named "<node>/..." (compiler.frontend.
# expand_lstm), and the GEMM kernel their steps run: onnxruntime's DynamicQuantizeLSTM
# quantises each GEMM's activations to uint8 at run time, as DynamicQuantizeMatMul does
# (contrib_ops/cpu/quantization/dynamic_quantize_lstm.cc); LSTM computes in fp32.
RECURRENT_GEMM = {"DynamicQuantizeLSTM": "MatMulIntegerToFloat", "LSTM": FP32}
_TOKEN = re.compile(r"(_token_\d+|_quant|_fused.*)+$")


@dataclass(frozen=True)
class KernelRow:
    """One layer: the kernel planned and the kernel onnxruntime runs ("" = no node of its
    own: fused into a neighbour's float kernel)."""

    layer: str
    kind: str
    planned: str
    onnxruntime: str

    @property
    def ok(self) -> bool:
        running = RECURRENT_GEMM.get(self.onnxruntime, self.onnxruntime)
        return self.planned == running or (self.planned == FP32 and running == "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def planned_kernel(row: Format) -> str:
    """The kernel label of a format-policy row (MatMulNBits with its accuracy level)."""
    if row.kernel == "MatMulNBits":
        return f"MatMulNBits/acc{4 if row.act == 'dynamic' else 0}"
    return FP32 if row.kernel in (FP32, "DequantizeLinear") else row.kernel


def node_kernel(node: onnx.NodeProto) -> str | None:
    """The kernel label of an optimised-graph node, or None if it is no compute node."""
    if node.op_type == "MatMulNBits":
        acc = next((a.i for a in node.attribute if a.name == "accuracy_level"), 0)
        return f"MatMulNBits/acc{4 if acc == 4 else 0}"  # 0 and 1 both compute in fp32
    if node.op_type == "QGemm":  # QLinearMatMul with a bias, for 2-D inputs
        return "QLinearMatMul"
    if node.op_type == "DynamicQuantizeMatMul":  # MatMulIntegerToFloat fed by its own
        return "MatMulIntegerToFloat"            # DynamicQuantizeLinear: the same GEMM
    if node.op_type in INTEGER_OPS:
        return node.op_type
    return FP32 if node.op_type in FLOAT_OPS else None


def optimized_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime runs (full optimisation, CPU, NCHWc layout transform off)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), opts,
                             providers=["CPUExecutionProvider"],
                             disabled_optimizers=["NchwcTransformer"])
        return onnx.load(opts.optimized_model_filepath, load_external_data=False)


def _owner(node_name: str, names: Sequence[str] | frozenset[str]) -> str | None:
    """The layer whose name is the longest prefix of `node_name` (suffixes stripped) that
    ends where a `_` or `.` follows, or the whole name."""
    known = names if isinstance(names, frozenset) else frozenset(names)
    for base in (node_name, _TOKEN.sub("", node_name)):
        # the candidates are the prefixes cut before a separator: a set lookup each, not a
        # scan of every layer name (PP-OCR: 472 nodes x 428 layers took 0.44 s)
        cuts = [len(base), *(i for i in range(len(base) - 1, 0, -1) if base[i] in "_.")]
        best = next((base[:i] for i in cuts if base[:i] in known), None)
        if best is not None:
            return best
    return None


def observed_kernels(optimized: onnx.ModelProto, layers: Sequence[str],
                     gemms: frozenset[str] = frozenset()) -> dict[str, str]:
    """Layer name -> kernel label of the compute node(s) onnxruntime runs for it; a
    recurrent node (`RECURRENT_GEMM`) names its op for the GEMM layers among `gemms` that
    edgesim unrolled it into."""
    found: dict[str, str] = {}
    known = frozenset(layers)
    for node in optimized.graph.node:
        if node.op_type in RECURRENT_GEMM:
            found |= {name: node.op_type for name in gemms if name.startswith(f"{node.name}/")}
            continue
        kernel, owner = node_kernel(node), _owner(node.name, known)
        if kernel is not None and owner is not None:
            found[owner] = kernel if found.get(owner, kernel) == kernel else \
                f"{found[owner]}+{kernel}"
    return found


def _checked(g: Graph, layer: Layer) -> bool:
    return KIND_CATEGORY[layer.kind] == CATEGORY_GEMM or layer.kind in CHECKED_KINDS


def check_kernels(g: Graph, model: onnx.ModelProto) -> tuple[KernelRow, ...]:
    """Planned against onnxruntime's kernel for every MAC and gather layer of the annotated
    graph `g`, emitted as `model`."""
    layers = [layer for layer in g.layers if _checked(g, layer)]
    gemms = frozenset(la.name for la in layers if KIND_CATEGORY[la.kind] == CATEGORY_GEMM)
    seen = observed_kernels(optimized_graph(model), [layer.name for layer in g.layers], gemms)
    return tuple(
        KernelRow(layer.name, layer.kind, planned_kernel(of_layer(layer, g.const_weight(layer))),
                  seen.get(layer.name, ""))
        for layer in layers)


def require_match(rows: Sequence[KernelRow]) -> None:
    """Raise at the first layer whose onnxruntime kernel is not the planned one.

    Raises:
        UserError: naming the layer, the planned and the running kernel.
    """
    bad = [r for r in rows if not r.ok]
    if bad:
        r = bad[0]
        more = f" (and {len(bad) - 1} more layer(s))" if len(bad) > 1 else ""
        raise UserError(f"layer {r.layer}", f"planned kernel {r.planned}, onnxruntime runs "
                        f"{r.onnxruntime or 'no node of its own'}{more}")


def running_row(kind: str, kernel: str, quantized: bool) -> str | None:
    """The format-policy row whose kernel onnxruntime was seen running (the table read
    backwards from its kernel label); None where no single row has it (two kernels).

    Args:
        kind: the layer kind.
        kernel: the observed kernel label (`node_kernel`; "" = fused into a float neighbour).
        quantized: the plan quantized the layer: a float kernel then runs with the plan's
            Q / DQ nodes around it (`qdq_float`).
    """
    kernel = RECURRENT_GEMM.get(kernel, kernel)
    if kernel in ("", FP32):
        fallback = "qdq_float" if quantized and kind in BY_NAME["qdq_float"].kinds else "float"
        return fallback
    return next((row.name for row in FORMATS
                 if kind in row.kinds and planned_kernel(row) == kernel), None)


def recost(g: Graph, bits: np.ndarray, target: Target, rows: Sequence[KernelRow], *,
           threads: int | None = None, runtime: str = "onnxruntime"
           ) -> dict[str, tuple[str, Cost]]:
    """Cost of every mismatched layer for the kernel onnxruntime runs.

    Args:
        g: the float graph the plan was made on.
        bits: the plan, int [L, 2].
        target: the target the plan was costed on.
        rows: the kernel check's rows (`check_kernels`).

    Returns:
        Layer name -> (the row it runs as, its `Cost` as [1, 1] arrays).
    """
    index = {layer.name: i for i, layer in enumerate(g.layers)}
    table = g.layer_table()
    out: dict[str, tuple[str, Cost]] = {}
    for r in rows:
        i = index.get(r.layer)
        name = None if r.ok or i is None else running_row(
            r.kind, r.onnxruntime, bool(bits[i, 0] < FLOAT_BITS or bits[i, 1] < FLOAT_BITS))
        if name is None:
            continue
        assert i is not None  # a running row was named for a layer of the graph
        codes = np.full(len(table), NO_FORMAT, np.int64)
        codes[i] = FORMAT_CODE[name]
        cost = evaluate(dataclasses.replace(table, fmt_code=codes), bits[i:i + 1], target,
                        threads=threads, runtime=runtime)
        out[r.layer] = (name, _row_of(cost, i))
    return out


def _row_of(cost: Cost, i: int) -> Cost:
    return Cost(*(None if v is None else v[i:i + 1]  # type: ignore[arg-type]  # row i of each
                  for v in dataclasses.astuple(cost)))


def _rerun(x: Any, row: str, cost: Cost) -> Any:
    """A report `LayerRow` costed for the row onnxruntime runs."""
    energy = cost.energy_pj_compute + cost.energy_pj_onchip + cost.energy_pj_dram
    return dataclasses.replace(
        x, cycles=float(cost.cycles[0, 0]), latency_ms=float(cost.latency_s[0, 0]) * 1e3,
        energy_uj=float(energy[0, 0]) * 1e-6, bound=BOUND_NAMES[int(cost.bound[0, 0])],
        note=f"{x.note}; costed as {row}: onnxruntime runs {x.onnxruntime_kernel or 'fp32'}, "
             f"planned {x.planned_kernel} ({x.latency_ms:.4g} ms)".lstrip("; "))


def with_running_costs(result: Any, g: Graph, bits: np.ndarray, target: Target, *,
                       threads: int | None = None, runtime: str = "onnxruntime") -> Any:
    """A compile result (`edgesim.report.CompileResult`) whose layers that onnxruntime runs
    with another kernel than planned are costed for what runs (`--kernel-check report`),
    with the totals and a note that say so."""
    checked = tuple(KernelRow(x.name, x.kind, x.planned_kernel, x.onnxruntime_kernel)
                    for x in result.layers if x.planned_kernel)
    found = recost(g, bits, target, checked, threads=threads, runtime=runtime)
    if not found:
        return result
    layers = tuple(_rerun(x, *found[x.name]) if x.name in found else x for x in result.layers)
    before, after = result.result.latency_ms, sum(x.latency_ms for x in layers)
    energy = sum(x.energy_uj for x in layers) * 1e-3
    note = (f"kernel check: {len(found)} layer(s) run another kernel than planned "
            f"({', '.join(list(found)[:3])}{', ...' if len(found) > 3 else ''}); costed for "
            f"what onnxruntime runs: latency {before:.4g} -> {after:.4g} ms")
    totals = dataclasses.replace(result.result, latency_ms=after, energy_mj=energy)
    return dataclasses.replace(result, layers=layers, result=totals,
                               notes=(*result.notes, note))


# ---------------------------------------------------------------- the batch, run

# A batch-2 output further than this share from its samples' batch-1 outputs, measured
# against both their distance and their size, mixed the samples. Batching alone moves
# outputs less: magika's W8A8 file (activations quantised per run over the whole batch)
# moves 1-3 % of the output's size at batch 2, and 2-14 % of the two samples' distance when
# random bytes give it near-equal outputs; the mixing softmax of tests/edgesim/
# test_batch_check.py moves 60-80 % of the size, 49-70 % of the distance.
MIXED_SHARE = 0.1


def per_sample_batch(g: Graph, model: onnx.ModelProto, options: EmitOptions
                     ) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """`model` (emitted from `g` with `options`), or, if it declares a dynamic batch that
    mixes samples, `g` emitted again at the batch it was lowered at, with a note saying why.

    The emitter follows the batch through shapes (`compiler.emit.batch`); a reshape that folds
    the batch into an axis a later layer reduces or normalises (a softmax over it) keeps every
    shape consistent but computes across samples. Only running the file shows it: two random
    samples stacked at batch 2 against each at batch 1 (`batch_mixes_samples`), when some
    tensor holds the batch merged with other data (only such a layout can mix them; the
    run costs up to 1.3 CPU-s, mrz_seg's).
    """
    why = batch_mixes_samples(model) if _batch_merged(g) else ""
    if not why:
        return model, ()
    from compiler.emit import emit

    fixed = emit(g, dataclasses.replace(options, fixed_batch=f"a run at batch 2 {why}"))
    return fixed, (f"the emitted model declares the batch it was lowered at, not a dynamic "
                   f"one: at batch 2 {why}",)


def _batch_merged(g: Graph) -> bool:
    """Whether the emitted batch sits, in some tensor, on an axis that also holds other
    data (a reshape folded it into a larger axis, `compiler.emit.batch.reshape_axes`)."""
    from compiler.emit.batch import flow

    found = flow(g)
    sizes = {g.types[t].shape[k] for t, k in found.axes.items() if t in g.types}
    return found.dynamic and len(sizes) > 1


def batch_mixes_samples(model: onnx.ModelProto, seed: int = 0) -> str:
    """How `model` at batch 2 differs from its two samples at batch 1 ("" if it does not, or
    declares no dynamic batch). The batch is each input's and output's one symbolic dim."""
    inputs, outputs = _batch_axes(model.graph.input), _batch_axes(model.graph.output)
    if not inputs or not outputs:
        return ""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    a, b = (_sample(model, rng) for _ in range(2))
    both = {t: np.concatenate([a[t], b[t]], axis=k) if k is not None else a[t]
            for t, k in ((t, inputs.get(t)) for t in a)}
    names = [o.name for o in model.graph.output]
    runs = [dict(zip(names, sess.run(None, feed), strict=True)) for feed in (a, b, both)]
    for name, k in outputs.items():
        ya, yb = (np.asarray(r[name], np.float64) for r in runs[:2])
        y2a, y2b = np.split(np.asarray(runs[2][name], np.float64), [ya.shape[k]], axis=k)
        off = float(max(np.linalg.norm(y2a - ya), np.linalg.norm(y2b - yb)))
        apart = float(np.linalg.norm(ya - yb))
        size = float(np.linalg.norm(ya) + np.linalg.norm(yb)) / 2
        if off > MIXED_SHARE * max(apart, size):
            return (f"output {name} is not its samples' batch-1 outputs (off by "
                    f"{off / max(apart, 1e-30):.2g} of their distance)")
    return ""


def _batch_axes(values: Sequence[onnx.ValueInfoProto]) -> dict[str, int]:
    """Tensor -> its one symbolic dim (tensors with none, or several, are left out)."""
    out = {}
    for v in values:
        dims = v.type.tensor_type.shape.dim
        symbolic = [k for k, d in enumerate(dims) if d.dim_param or not d.HasField("dim_value")]
        if len(symbolic) == 1:
            out[v.name] = symbolic[0]
    return out


def _sample(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One random sample per input at batch 1: normal floats, 0/1 integers (valid indices
    and ids), random booleans."""
    feed = {}
    for v in model.graph.input:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        feed[v.name] = (rng.standard_normal(shape) if dtype.kind == "f" else
                        rng.random(shape) < 0.5 if dtype.kind == "b" else
                        rng.integers(0, 2, shape)).astype(dtype)
    return feed
