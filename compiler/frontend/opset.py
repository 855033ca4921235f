"""The default-domain opset a model is read at: below 17, converted up to 17.

The converter (`onnx.version_converter`) serialises the model it is given and builds its own
copy of every tensor, so it is given the model without its weights' bytes, which go back in
after: the upgrades to 17 move attributes to inputs and rename ops, reading no weight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import onnx

from compiler.errors import ModelError
from compiler.frontend.inline_if import DEFAULT_DOMAINS

TARGET_OPSET = 17


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version."""
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)


def upgrade_opset(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Convert a model below opset 17 up to 17; newer opsets are left as they are.

    The converter serialises the model it is given and builds its own copy of every tensor,
    so it is given the model without its weights' bytes, which go back in after (PP-OCR's 42
    Constant weights: 0.055 -> 0.010 CPU-s, the same converted bytes; the upgrades to 17 move
    attributes to inputs and rename ops, reading no weight). A weight the converter did not
    keep by its name is put back by converting the whole model instead.
    """
    version = default_opset(model)
    if version >= TARGET_OPSET or version == 0:  # 0: no ai.onnx op at all (ai.onnx.ml only)
        return model
    held = _take_weight_bytes(model)
    try:
        converted = _converted(model, version, where)
    finally:
        _put_weight_bytes(model, held)
    if _put_weight_bytes(converted, held) != held.keys():
        converted = _converted(model, version, where)
    return converted


def _converted(model: onnx.ModelProto, version: int, where: str) -> onnx.ModelProto:
    try:
        return onnx.version_converter.convert_version(model, TARGET_OPSET)
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as e:
        what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(where, f"cannot convert opset {version} to {TARGET_OPSET}: {what}") from e


WEIGHT_BYTES = 4096  # tensors with more raw bytes leave the model while its opset converts


def _keyed_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(key, tensor) of every initializer and Constant value, subgraphs included; the keys
    (initializer and Constant output names) are what the converter keeps."""
    yield from ((f"init:{t.name}", t) for t in graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.HasField("t"):
                yield f"const:{node.output[0]}", attr.t
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _keyed_tensors(sub)


def _take_weight_bytes(model: onnx.ModelProto) -> dict[str, bytes]:
    """Move the raw data of tensors over WEIGHT_BYTES out of `model` (in place), by key;
    none if a key is not unique."""
    tensors = list(_keyed_tensors(model.graph))
    if len({k for k, _ in tensors}) < len(tensors):
        return {}
    held = {k: t.raw_data for k, t in tensors if len(t.raw_data) > WEIGHT_BYTES}
    for key, tensor in tensors:
        if key in held:
            tensor.raw_data = b""
    return held


def _put_weight_bytes(model: onnx.ModelProto, held: Mapping[str, bytes]) -> set[str]:
    """Put `held` back into the emptied tensors of the same keys (in place); the keys put."""
    put = set()
    for key, tensor in _keyed_tensors(model.graph):
        if key in held and not tensor.raw_data:
            tensor.raw_data = held[key]
            put.add(key)
    return put
