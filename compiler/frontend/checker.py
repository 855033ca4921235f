"""`onnx.checker` run once per load, on a skeleton of the model: the graph as it stands,
with each plain initializer's data replaced by a one-element stand-in.

The checker's own rules for a tensor (`check_tensor` in onnx/checker.cc: a known data type,
exactly one data field, raw data at least as long as its dims need) are met by every plain
initializer (`_plain`: raw data only, a fixed-width type) once `load.check_tensor_sizes` has
matched its data to its dims; everything else the checker looks at (names, the IR <= 3 rule
that initializers are inputs, node schemas, opsets) is kept as it is. So the skeleton fails
exactly where the whole model fails, and checking it serialises no weight: a 90 MB MiniLM
file took 0.18 CPU-s and a second parse of the file to check, its skeleton ~10 ms.
"""

from __future__ import annotations

import onnx
from google.protobuf.message import Message

from compiler.errors import ModelError

# fixed-width types whose raw data `check_tensor_sizes` matches to the dims exactly (sub-byte
# and float8/float6 types have their own packing rules in the checker: kept whole)
_PLAIN_TYPES = {getattr(onnx.TensorProto, n): size for n, size in (
    ("FLOAT", 4), ("DOUBLE", 8), ("FLOAT16", 2), ("BFLOAT16", 2), ("INT8", 1), ("UINT8", 1),
    ("INT16", 2), ("UINT16", 2), ("INT32", 4), ("UINT32", 4), ("INT64", 8), ("UINT64", 8),
    ("BOOL", 1))}
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                 "uint64_data")


def _unread(t: onnx.TensorProto) -> bool:
    """External data not read in (a shapes-only load)."""
    return t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data


def _plain(t: onnx.TensorProto) -> bool:
    """Whether the checker's tensor rules hold for `t` given its checked size: raw data of a
    fixed-width type, no other data field, not external, not empty."""
    return (t.data_type in _PLAIN_TYPES and t.data_location != onnx.TensorProto.EXTERNAL
            and t.HasField("raw_data") and not t.HasField("segment")
            and all(d > 0 for d in t.dims)
            and not any(len(getattr(t, f)) for f in _TYPED_FIELDS))


def _checked_form(t: onnx.TensorProto) -> onnx.TensorProto:
    """What the checker sees of initializer `t`: a one-element tensor of its name and type
    if it is plain (its data was checked) or unread external data (none is there to check),
    else `t` itself."""
    if not (_plain(t) or _unread(t)):
        return t
    out = onnx.TensorProto()
    for field in ("name", "data_type"):  # set only where `t` sets them: presence is checked
        if t.HasField(field):
            setattr(out, field, getattr(t, field))
    if t.data_type == onnx.TensorProto.STRING:
        out.string_data.append(b"")
    else:  # 8 zero bytes hold one element of any other type (and zero padding bits)
        out.raw_data = bytes(_PLAIN_TYPES.get(t.data_type, 8))
    return out


def _copy_fields(src: Message, dst: Message, skip: str) -> None:
    """Copy every set field of `src` but `skip` into the empty `dst`."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if isinstance(value, Message):
            getattr(dst, fd.name).CopyFrom(value)
        elif isinstance(value, str | bytes | int | float):
            setattr(dst, fd.name, value)
        else:  # a repeated field
            getattr(dst, fd.name).extend(value)


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose plain initializers (and unread external ones: the checker
    would look for their files relative to the working directory) are one-element
    stand-ins; `model` itself is not modified."""
    out = onnx.ModelProto()
    _copy_fields(model, out, "graph")
    _copy_fields(model.graph, out.graph, "initializer")
    out.graph.initializer.extend(_checked_form(t) for t in model.graph.initializer)
    return out


def _checker_where(where: str, message: str) -> str:
    """Name the node the checker complains about, when its message says which."""
    marker = "Bad node spec for node. Name: "
    if marker not in message:
        return where
    name = message.split(marker, 1)[1].split(" OpType:", 1)[0].strip()
    return f"{where}: node {name}" if name else where


def check(model: onnx.ModelProto, where: str) -> None:
    """Run `onnx.checker` (structure and node schemas) on `model`'s `skeleton`; raise
    ModelError on failure. Tensor sizes must have been checked (`load.check_tensor_sizes`)."""
    try:
        onnx.checker.check_model(skeleton(model), full_check=False)
    except (onnx.checker.ValidationError, ValueError) as e:
        message = str(e).strip()
        # One line for the CLI: the checker's text without its multi-line context dump.
        what = " ".join(message.split("==> Context")[0].split()) or type(e).__name__
        raise ModelError(_checker_where(where, message), f"invalid ONNX model: {what}") from e
