"""index op family: n-dimensional gathers and arg-reductions, the indexing that exporters put
into attention-mask construction (GatherND) and label post-processing (ArgMax/ArgMin).

- kind "gather_nd": inputs (data, indices), attr batch_dims (ONNX GatherND). The last axis of
  `indices` holds m coordinates into data's axes batch_dims .. batch_dims+m-1; output shape
  indices[:-1] + data[batch_dims+m:]. Negative coordinates count from the end. The VJP
  scatter-adds into data's cotangent; indices get None.
- kind "arg_reduce": attrs fn ("max" | "min"), axis (non-negative), keepdims,
  select_last_index (ONNX ArgMax/ArgMin); int64 output, no cotangent (piecewise constant).
  These layers do no MAC work: they stay in float wherever they sit (a float island).

`ai.onnx.ml::ArrayFeatureExtractor` (the label lookup of scikit-learn classifiers exported by
skl2onnx: classes[argmax]) lowers to a `gather` along the last axis; it is emitted as a
standard Gather.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Layer, Spec, frozen_attrs
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

Array = np.ndarray


# --- gather_nd ------------------------------------------------------------------------------


def _nd_index(data_shape: Sequence[int], indices: Array,
              batch_dims: int) -> tuple[Array | slice, ...]:
    """The numpy index into data reshaped to [prod(batch), *data[batch_dims:]]."""
    nb = int(np.prod(data_shape[:batch_dims], dtype=np.int64))
    idx = indices.reshape((nb,) + indices.shape[batch_dims:])
    batch = np.arange(nb).reshape((nb,) + (1,) * (idx.ndim - 2))
    return (batch, *np.moveaxis(idx, -1, 0))


def _flat_batch(data: Array, batch_dims: int) -> Array:
    return data.reshape((-1,) + data.shape[batch_dims:]) if batch_dims else data[None]


def _nd_forward(data: Array, indices: Array, *, batch_dims: int = 0) -> tuple[Array]:
    out = _flat_batch(data, batch_dims)[_nd_index(data.shape, indices, batch_dims)]
    m = indices.shape[-1]
    return (np.asarray(out).reshape(indices.shape[:-1] + data.shape[batch_dims + m:]),)


def _nd_shape(specs: Sequence[Spec], *, batch_dims: int = 0) -> tuple[Spec]:
    data, indices = specs
    m = indices.shape[-1]
    if data.shape[:batch_dims] != indices.shape[:batch_dims] or batch_dims + m > len(data.shape):
        raise ValueError(f"GatherND indices {indices.shape} do not fit data {data.shape} "
                         f"with batch_dims {batch_dims}")
    return (Spec(indices.shape[:-1] + data.shape[batch_dims + m:], data.dtype),)


def _nd_vjp(gs: Sequence[Array | None], xs: Sequence[Array], ys: Sequence[Array], *,
            batch_dims: int = 0) -> tuple[Array | None, None]:
    (g,), (data, indices) = gs, xs
    if g is None or data.dtype.kind != "f":
        return None, None
    out = np.zeros_like(_flat_batch(data, batch_dims))
    index = _nd_index(data.shape, indices, batch_dims)
    # repeated coordinates accumulate; a tuple index is valid, numpy's stubs list arrays only
    np.add.at(out, index, g.reshape(out[index].shape))  # type: ignore[arg-type]
    return out.reshape(data.shape), None


def _nd_facts(specs_in: Sequence[Spec], specs_out: Sequence[Spec], **attrs: object) -> Facts:
    return Facts(ops=specs_out[0].size)  # one indexed load per output element


# --- arg_reduce -----------------------------------------------------------------------------


def _arg_forward(x: Array, *, fn: str, axis: int, keepdims: bool,
                 select_last_index: bool = False) -> tuple[Array]:
    pick = np.argmax if fn == "max" else np.argmin
    if select_last_index:  # the last of tied extrema: search the reversed axis
        idx = x.shape[axis] - 1 - pick(np.flip(x, axis=axis), axis=axis)
    else:
        idx = pick(x, axis=axis)
    idx = np.asarray(idx, dtype=np.int64)
    return (np.expand_dims(idx, axis) if keepdims else idx,)


def _arg_shape(specs: Sequence[Spec], *, fn: str, axis: int, keepdims: bool,
               select_last_index: bool = False) -> tuple[Spec]:
    shape = specs[0].shape
    if not 0 <= axis < len(shape) or fn not in ("max", "min"):
        raise ValueError(f"arg_reduce {fn} over axis {axis} of rank {len(shape)}")
    out = shape[:axis] + ((1,) if keepdims else ()) + shape[axis + 1:]
    return (Spec(out, "int64"),)


def _arg_vjp(gs: Sequence[Array | None], xs: Sequence[Array], ys: Sequence[Array],
             **attrs: object) -> tuple[None]:
    return (None,)  # an index is piecewise constant in x


def _arg_facts(specs_in: Sequence[Spec], specs_out: Sequence[Spec], **attrs: object) -> Facts:
    return Facts(ops=specs_in[0].size)  # one compare per input element


OPS: tuple[OpDef, ...] = (
    OpDef("gather_nd", shape=_nd_shape, forward=_nd_forward, vjp=_nd_vjp, facts=_nd_facts),
    OpDef("arg_reduce", shape=_arg_shape, forward=_arg_forward, vjp=_arg_vjp,
          facts=_arg_facts),
)


# --- lowering -------------------------------------------------------------------------------


def lower_gather_nd(node: Node, batch_dims: int = 0) -> Lowered:
    """ONNX GatherND."""
    data, indices = node.spec(0), node.spec(1)
    assert indices is not None
    if indices.dtype != "int64":
        raise ModelError(node.name, f"GatherND indices must be int64, got {indices.dtype}")
    assert data is not None
    if not indices.shape or not 0 <= batch_dims < min(len(data.shape), len(indices.shape)):
        raise ModelError(node.name, f"GatherND batch_dims {batch_dims} does not fit data "
                                    f"{data.shape} and indices {indices.shape}")
    try:
        _nd_shape([data, indices], batch_dims=batch_dims)
    except ValueError as e:
        raise ModelError(node.name, str(e)) from e
    return single("gather_nd", node, batch_dims=batch_dims)


def _arg_rule(fn: str) -> LowerRule:
    def rule(node: Node, axis: int = 0, keepdims: int = 1, select_last_index: int = 0
             ) -> Lowered:
        rank = len(node.required_spec(0).shape)
        if not -rank <= axis < rank:
            raise ModelError(node.name, f"{node.op_type} axis {axis} out of range for rank "
                                        f"{rank}")
        return single("arg_reduce", node, fn=fn, axis=axis % rank, keepdims=bool(keepdims),
                      select_last_index=bool(select_last_index))
    rule.__doc__ = f"ONNX Arg{fn.capitalize()} -> arg_reduce({fn})."
    return rule


def lower_array_feature_extractor(node: Node) -> Lowered:
    """ai.onnx.ml ArrayFeatureExtractor(X, Y): X[..., Y.flatten()], and [1, n] for a 1-D X
    (onnxruntime's shape rule)."""
    x, idx = node.spec(0), node.spec(1)
    assert x is not None
    assert idx is not None
    if np.dtype(x.dtype).kind not in "biuf" or idx.dtype not in ("int64", "int32"):
        raise ModelError(node.name, f"ArrayFeatureExtractor on {x.dtype} data with {idx.dtype} "
                                    "indices is not supported (numeric data, integer indices)")
    n, flat = idx.size, f"{node.name}.indices"
    layers = [Layer(f"{node.name}.flatten", "reshape", (node.inputs[1],), (flat,),
                    frozen_attrs({"shape": (n,)}))]
    rank_one = len(x.shape) == 1
    picked = f"{node.name}.picked" if rank_one else node.outputs[0]
    layers.append(Layer(node.name, "gather", (node.inputs[0], flat), (picked,),
                        frozen_attrs({"axis": len(x.shape) - 1, "elements": False})))
    if rank_one:
        layers.append(Layer(f"{node.name}.row", "reshape", (picked,), node.outputs[:1],
                            frozen_attrs({"shape": (1, n)})))
    return Lowered(layers=tuple(layers))


LOWER: dict[str, LowerRule] = {
    "GatherND": lower_gather_nd, "ArgMax": _arg_rule("max"), "ArgMin": _arg_rule("min"),
    "ArrayFeatureExtractor": lower_array_feature_extractor,
}
DOMAINS: dict[str, str] = {"ArrayFeatureExtractor": "ai.onnx.ml"}  # ops outside ai.onnx
