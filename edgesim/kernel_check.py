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

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import onnx
import onnxruntime as ort

from compiler.formats import Format, of_layer
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer
from edgesim.errors import UserError

FP32 = "fp32"
# Float compute nodes (after onnxruntime's activation and bias fusions): one label, fp32.
FLOAT_OPS = frozenset({"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm",
                       "FusedGemm", "Gather", "Attention", "MultiHeadAttention"})
INTEGER_OPS = frozenset({"QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat",
                         "DynamicQuantizeMatMul", "ConvInteger", "MatMulInteger",
                         "GatherBlockQuantized", "QGemm", "QLinearConvTranspose"})
CHECKED_KINDS = ("gather",)  # besides the MAC layers
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
        return self.planned == self.onnxruntime or (
            self.planned == FP32 and self.onnxruntime == "")

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


def _owner(node_name: str, names: Sequence[str]) -> str | None:
    """The layer whose name is the longest prefix of `node_name` (suffixes stripped)."""
    for base in (node_name, _TOKEN.sub("", node_name)):
        best = [n for n in names if base == n or base.startswith((f"{n}_", f"{n}."))]
        if best:
            return max(best, key=len)
    return None


def observed_kernels(optimized: onnx.ModelProto, layers: Sequence[str]) -> dict[str, str]:
    """Layer name -> kernel label of the compute node(s) onnxruntime runs for it."""
    found: dict[str, str] = {}
    for node in optimized.graph.node:
        kernel, owner = node_kernel(node), _owner(node.name, layers)
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
    seen = observed_kernels(optimized_graph(model), [layer.name for layer in g.layers])
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
