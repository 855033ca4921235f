"""Load an ONNX model: read it safely, validate it, clean up exporter output, lower it to the IR.

The steps, in order:

1. read the bytes and parse them (a truncated or garbage file is a `ModelError`);
2. check every tensor's declared size and that external data stays inside the model's folder,
   then load the data (`compiler.frontend.tensors`);
3. `onnx.checker` (`compiler.frontend.checker`); upgrade default-domain opsets below 17 to 17
   (`compiler.frontend.opset`);
4. clean up (`compiler.frontend.clean`): drop stale `value_info`, treat initializers listed as
   inputs as constants, give every input a static shape, lift `Constant` nodes to
   initializers, inline `If` nodes whose condition is known, and list every unsupported op in
   one error;
5. lower to the IR, fuse decomposed LayerNorm/RMSNorm/GELU/SiLU/hard-swish
   (`compiler.frontend.patterns`), fold BatchNorm.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import onnx
from google.protobuf.message import DecodeError

from compiler.errors import ModelError
from compiler.frontend.checker import check
from compiler.frontend.clean import clean_owned
from compiler.frontend.inputs import BatchAxes, InputShapes, InputValues, declared_dims
from compiler.frontend.lower import lower_model
from compiler.frontend.opset import default_opset, upgrade_opset
from compiler.frontend.patterns import fuse_patterns
from compiler.frontend.qoperator import has_qoperator, to_qdq
from compiler.frontend.quantized import dequantize, is_quantized
from compiler.frontend.quantized_annotate import annotate
from compiler.frontend.tensors import check_tensor_sizes, load_external_data
from compiler.ir import Graph, Interface
from compiler.passes.fold_batchnorm import fold_batchnorm


def load(model: str | os.PathLike[str] | onnx.ModelProto,
         input_shapes: InputShapes | None = None, *,
         input_values: InputValues | None = None,
         batch_axes: BatchAxes | None = None, shapes_only: bool = False,
         arch: str | None = None) -> Graph:
    """Load, validate and clean an ONNX model and lower it to a fused `Graph`.

    Args:
        model: a path to an `.onnx` file (external data next to it), or a `ModelProto`.
        input_shapes: static shapes for graph inputs, overriding the declared ones; needed for
            every dynamic dimension except a batch dimension (which defaults to 1).
        input_values: inputs pinned to a value (e.g. {"sr": 16000}): they become constants
            and leave the model's inputs, so `If` nodes that test them are inlined.
        batch_axes: the axis holding samples per input, where it is not the detected one
            (None: no batch axis). Detected: axis 0, or, for an input whose first dimension
            is static while other inputs have a dynamic batch, its one dynamic dimension
            (or the one named like their batch dimension), e.g. a state [2, batch, H].
        shapes_only: leave external data unread: those weights become shape-only
            placeholders (zero-stride arrays of their shape and dtype, holding no memory),
            enough for simulation and allocation, which need shapes, not values.
        arch: the architecture whose onnxruntime runs a quantized file (`CpuTarget.arch`;
            None: this machine's): it decides which read-back GEMMs run int8
            (`quantized_annotate.SHARED_INT8_FUSES`).

    Returns:
        The lowered graph, with LayerNorm/RMSNorm/GELU/SiLU/hard-swish fused and BatchNorm
        folded.

    Raises:
        ModelError: the file is not a valid model, external data escapes the model's folder,
            the checker or the opset converter rejects it, a dynamic dimension has no shape,
            or ops are unsupported (all of them listed at once).
    """
    proto, where = read(model, shapes_only=shapes_only)
    interface = source_interface(proto)
    proto = to_qdq(proto) if has_qoperator(proto) else proto  # QOperator ops read as QDQ
    floated, marks = dequantize(proto) if is_quantized(proto) else (proto, {})  # read back
    name = _model_name(model, proto)
    del proto  # `read` and `dequantize` made these models: cleaned in place, not copied
    cleaned = clean_owned(floated, input_shapes, where, input_values, batch_axes)
    del floated
    g = lower_model(cleaned.model, name)
    g = fold_batchnorm(fuse_patterns(g))
    g = annotate(g, marks, arch=arch) if marks else g                   # bits + format rows
    axes = {n: a for n, a in cleaned.batch_axes.items() if n in g.inputs and a != 0}
    return replace(g, notes=g.notes + cleaned.notes, batch_axes=MappingProxyType(axes),
                   interface=interface)


def source_interface(model: onnx.ModelProto) -> Interface:
    """The declared dims of the model's inputs and outputs, and its opset (emission keeps
    them; a source below opset 17 was upgraded to 17 on reading)."""
    dims = {vi.name: tuple(declared_dims(vi) or ()) for vi in [*model.graph.input,
                                                             *model.graph.output]}
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return Interface(MappingProxyType(dims), default_opset(model), producer)


def read(model: str | os.PathLike[str] | onnx.ModelProto, *,
         shapes_only: bool = False) -> tuple[onnx.ModelProto, str]:
    """Parse, load external data (`shapes_only`: only check where it is), check and upgrade
    a model; return it with its display name.

    The file is read once, and the checker runs once, on a skeleton without the weights'
    data (`compiler.frontend.checker`). A `ModelProto` argument is copied, never modified.
    """
    if isinstance(model, onnx.ModelProto):
        proto, where, folder = _copy(model), model.graph.name or "model", None
    else:
        where, folder = os.fspath(model), os.path.dirname(os.path.abspath(model))
        proto = parse(_read_bytes(where), where)
    check_tensor_sizes(proto, where)
    # the quantized-model reader dequantises weights by value: it needs them
    load_external_data(proto, where, folder, shapes_only=shapes_only and not is_quantized(proto))
    check(proto, where)
    return upgrade_opset(proto, where), where


def _model_name(model: str | os.PathLike[str] | onnx.ModelProto, proto: onnx.ModelProto) -> str:
    if isinstance(model, onnx.ModelProto):
        return proto.graph.name or "model"
    return Path(model).stem


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out



def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ModelError(path, f"cannot read the model: {e.strerror or e}") from e


def parse(data: bytes, where: str) -> onnx.ModelProto:
    """Parse serialized model bytes; reject empty, corrupt or graph-less input."""
    if not data:
        raise ModelError(where, "not a valid ONNX model: the file is empty")
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(where, f"not a valid ONNX model: {e}") from e
    # Protobuf happily parses some junk (and some truncations) into a message without a graph.
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelError(where, "not a valid ONNX model: it has no graph or no opset_import")
    return proto
