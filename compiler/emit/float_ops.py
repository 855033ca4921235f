"""Float emission: every IR kind back to standard ONNX ops (opset 21), one rule per kind.

A rule is `rule(b, layer, ins)`: `ins` are the emitted names of the layer's inputs (a
quantising emitter may substitute a dequantised weight), and the rule writes the layer's
outputs under their IR names. Each rule computes what the kind's `OpDef.forward` computes
(tests/compiler/test_emit.py checks every kind against the executor in onnxruntime).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import helper

from compiler.emit import sparsify
from compiler.emit.batch import by_sizes
from compiler.emit.builder import Builder
from compiler.errors import ModelError
from compiler.ir import Layer

Rule = Callable[[Builder, Layer, list[str]], None]
INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max


def _ints(b: Builder, layer: Layer, what: str, values: tuple[int, ...]) -> str:
    return b.const(f"{layer.name}.{what}", np.asarray(values, np.int64))


def _scalar(b: Builder, layer: Layer, what: str, value: float, like: str) -> str:
    dtype = np.dtype(b.graph.types[like].dtype) if like in b.graph.types else np.float32
    return b.const(f"{layer.name}.{what}", np.asarray(value, dtype))


def _dtype(b: Builder, layer: Layer) -> np.dtype:
    return np.dtype(b.graph.types[layer.outputs[0]].dtype)


# --- MAC layers ---------------------------------------------------------------------------------


def present(ins: list[str]) -> list[str]:
    """`ins` without trailing absent optional inputs."""
    while ins and not ins[-1]:
        ins = ins[:-1]
    return ins


def conv(b: Builder, layer: Layer, ins: list[str]) -> None:
    a = layer.attrs
    b.node("Conv", present(ins), list(layer.outputs), base=layer.name,
           strides=list(a["strides"]), pads=list(a["pads"]), dilations=list(a["dilations"]),
           group=a["group"])


def conv_transpose(b: Builder, layer: Layer, ins: list[str]) -> None:
    """ConvTranspose; negative IR pads (an output larger than the natural one) become zero
    padding after the op, with the bias added last as the IR does."""
    a = layer.attrs
    pads = list(a["pads"])
    grow = [max(-p, 0) for p in pads]
    attrs = dict(strides=list(a["strides"]), pads=[max(p, 0) for p in pads],
                 dilations=list(a["dilations"]), group=a["group"],
                 output_padding=list(a["output_padding"]))
    bias = ins[2] if len(ins) > 2 else ""
    if not any(grow):
        b.node("ConvTranspose", ins[:2] + ([bias] if bias else []), list(layer.outputs),
               base=layer.name, **attrs)
        return
    (y,) = b.node("ConvTranspose", ins[:2], base=layer.name, **attrs)
    n = len(grow) // 2
    full = [0, 0] + grow[:n] + [0, 0] + grow[n:]
    outs = list(layer.outputs) if not bias else 1
    (y,) = b.node("Pad", [y, _ints(b, layer, "grow", tuple(full))], outs, base=layer.name)
    if bias:
        shape = _ints(b, layer, "bias_shape", (1, -1) + (1,) * n)
        (bb,) = b.node("Reshape", [bias, shape], base=layer.name)
        b.node("Add", [y, bb], list(layer.outputs), base=layer.name)


def transposed(b: Builder, name: str, base: str) -> str:
    """`name` transposed (a new initializer if `name` is one, else a Transpose node)."""
    if b.is_initializer(name):
        return b.const(f"{base}.T", b.array(name).T)
    return b.node("Transpose", [name], base=base, perm=[1, 0])[0]


def linear(b: Builder, layer: Layer, ins: list[str]) -> None:
    """Gemm for 2-D inputs, MatMul (+ Add) otherwise."""
    bias = ins[2] if len(ins) > 2 else ""
    out = list(layer.outputs)
    if len(b.graph.types[layer.inputs[0]].shape) == 2:
        b.node("Gemm", ins[:2] + ([bias] if bias else []), out, base=layer.name, transB=1)
        return
    wt = transposed(b, ins[1], f"{layer.name}.weight")
    (y,) = b.node("MatMul", [ins[0], wt], out if not bias else 1, base=layer.name)
    if bias:
        b.node("Add", [y, bias], out, base=layer.name)


def matmul(b: Builder, layer: Layer, ins: list[str]) -> None:
    b.node("MatMul", ins[:2], list(layer.outputs), base=layer.name)


# --- elementwise ------------------------------------------------------------------------------

_ELTWISE = {
    "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "equal": "Equal", "less": "Less",
    "less_equal": "LessOrEqual", "greater": "Greater", "greater_equal": "GreaterOrEqual",
    "where": "Where", "max": "Max", "min": "Min", "mean": "Mean",
    "and": "And", "or": "Or", "xor": "Xor", "not": "Not",
}


def eltwise(b: Builder, layer: Layer, ins: list[str]) -> None:
    fn = layer.attrs["fn"]
    op = ("Add" if len(ins) == 2 else "Sum") if fn == "add" else _ELTWISE[fn]
    b.node(op, ins, list(layer.outputs), base=layer.name)


def _clip_bounds(b: Builder, layer: Layer, x: str) -> list[str]:
    lo, hi = layer.attrs.get("min", -math.inf), layer.attrs.get("max", math.inf)
    return [x, "" if lo == -math.inf else _scalar(b, layer, "min", lo, layer.inputs[0]),
            "" if hi == math.inf else _scalar(b, layer, "max", hi, layer.inputs[0])]


def _silu(b: Builder, layer: Layer, x: str) -> None:
    alpha = layer.attrs.get("alpha", 1.0)
    scaled = x if alpha == 1.0 else b.node(
        "Mul", [x, _scalar(b, layer, "alpha", alpha, layer.inputs[0])], base=layer.name)[0]
    (s,) = b.node("Sigmoid", [scaled], base=layer.name)
    b.node("Mul", [x, s], list(layer.outputs), base=layer.name)


_UNARY = {
    "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "hard_swish": "HardSwish",
    "erf": "Erf", "sqrt": "Sqrt", "exp": "Exp", "log": "Log", "neg": "Neg", "abs": "Abs",
    "reciprocal": "Reciprocal", "softplus": "Softplus", "softsign": "Softsign",
    "leaky_relu": "LeakyRelu", "hard_sigmoid": "HardSigmoid", "elu": "Elu", "selu": "Selu",
    "gelu": "Gelu",
}
_PARAMS = ("alpha", "beta", "gamma", "approximate")


def _identity_on_grid(b: Builder, layer: Layer, x: str) -> bool:
    """A ReLU or Clip whose input lies on a grid it cannot change (every code in range)."""
    grid = b.grid(x)
    fn = layer.attrs["fn"]
    if grid is None or fn not in ("relu", "clip"):
        return False
    lo_code, hi_code = 0, 2**grid.bits - 1
    lo = 0.0 if fn == "relu" else layer.attrs.get("min", -math.inf)
    hi = math.inf if fn == "relu" else layer.attrs.get("max", math.inf)
    return grid.real(lo_code) >= lo and grid.real(hi_code) <= hi


def activation(b: Builder, layer: Layer, ins: list[str]) -> None:
    fn, x = layer.attrs["fn"], ins[0]
    if _identity_on_grid(b, layer, x):
        b.fold(layer)  # exact: every value on the grid passes unchanged
        return
    if fn == "clip":
        b.node("Clip", _clip_bounds(b, layer, x), list(layer.outputs), base=layer.name)
    elif fn == "silu":
        _silu(b, layer, x)
    elif fn == "threshold":  # activation sparsification (issue 15)
        sparsify.threshold(b, layer, x)
    else:
        params = {k: v for k, v in layer.attrs.items() if k in _PARAMS}
        b.node(_UNARY[fn], [x], list(layer.outputs), base=layer.name, **params)


def cast(b: Builder, layer: Layer, ins: list[str]) -> None:
    to = helper.np_dtype_to_tensor_dtype(np.dtype(layer.attrs["to"]))
    b.node("Cast", ins[:1], list(layer.outputs), base=layer.name, to=to)


# --- normalisation, softmax, pooling, reductions ----------------------------------------------


def _rms_norm(b: Builder, layer: Layer, ins: list[str]) -> None:
    """x / sqrt(mean(x^2) + eps) * scale (RMSNormalization is opset 23)."""
    x, a = ins[0], layer.attrs
    rank = len(b.graph.types[layer.inputs[0]].shape)
    axes = _ints(b, layer, "axes", tuple(range(a["axis"], rank)))
    (sq,) = b.node("Mul", [x, x], base=layer.name)
    (ms,) = b.node("ReduceMean", [sq, axes], base=layer.name, keepdims=1)
    (v,) = b.node("Add", [ms, _scalar(b, layer, "epsilon", a["epsilon"], layer.inputs[0])],
                  base=layer.name)
    (r,) = b.node("Sqrt", [v], base=layer.name)
    (n,) = b.node("Div", [x, r], base=layer.name)
    b.node("Mul", [n, ins[1]], list(layer.outputs), base=layer.name)


def norm(b: Builder, layer: Layer, ins: list[str]) -> None:
    fn, a, out = layer.attrs["fn"], layer.attrs, list(layer.outputs)
    if fn == "rms_norm":
        _rms_norm(b, layer, ins)
    elif fn == "layer_norm":
        b.node("LayerNormalization", present(ins), out, base=layer.name,
               axis=a["axis"], epsilon=a["epsilon"])
    else:
        op = {"batch_norm": "BatchNormalization", "instance_norm": "InstanceNormalization"}[fn]
        b.node(op, ins, out, base=layer.name, epsilon=a["epsilon"])


def softmax(b: Builder, layer: Layer, ins: list[str]) -> None:
    op = "LogSoftmax" if layer.attrs["log"] else "Softmax"
    b.node(op, ins, list(layer.outputs), base=layer.name, axis=layer.attrs["axis"])


def pool(b: Builder, layer: Layer, ins: list[str]) -> None:
    a, out = layer.attrs, list(layer.outputs)
    glob = {"global_avg": "GlobalAveragePool", "global_max": "GlobalMaxPool"}
    if a["fn"] in glob:
        b.node(glob[a["fn"]], ins, out, base=layer.name)
        return
    attrs: dict[str, Any] = dict(kernel_shape=list(a["kernel_shape"]), strides=list(a["strides"]),
                 pads=list(a["pads"]), ceil_mode=int(a["ceil_mode"]))
    if any(d != 1 for d in a["dilations"]):  # AveragePool takes dilations from opset 19 on
        attrs["dilations"] = list(a["dilations"])
    if a["fn"] == "avg":
        b.node("AveragePool", ins, out, base=layer.name,
               count_include_pad=int(a["count_include_pad"]), **attrs)
    else:
        b.node("MaxPool", ins, out, base=layer.name, **attrs)


_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
           "prod": "ReduceProd", "l1": "ReduceL1", "l2": "ReduceL2",
           "sum_square": "ReduceSumSquare", "log_sum": "ReduceLogSum",
           "log_sum_exp": "ReduceLogSumExp"}


def _inv_std(b: Builder, layer: Layer, x: str) -> None:
    """1 / sqrt(var + eps) over the axes (LayerNormalization's InvStdDev output)."""
    a = layer.attrs
    axes = _ints(b, layer, "axes", a["axes"])
    (m,) = b.node("ReduceMean", [x, axes], base=layer.name, keepdims=1)
    (d,) = b.node("Sub", [x, m], base=layer.name)
    (dd,) = b.node("Mul", [d, d], base=layer.name)
    (v,) = b.node("ReduceMean", [dd, axes], base=layer.name, keepdims=int(a["keepdims"]))
    eps = _scalar(b, layer, "epsilon", a.get("epsilon", 0.0), layer.inputs[0])
    (s,) = b.node("Sqrt", [b.node("Add", [v, eps], base=layer.name)[0]], base=layer.name)
    b.node("Reciprocal", [s], list(layer.outputs), base=layer.name)


def reduce(b: Builder, layer: Layer, ins: list[str]) -> None:
    a = layer.attrs
    if a["fn"] == "inv_std":
        _inv_std(b, layer, ins[0])
        return
    if not a["axes"]:  # () reduces nothing: ONNX's noop_with_empty_axes
        b.node(_REDUCE[a["fn"]], ins[:1], list(layer.outputs), base=layer.name,
               keepdims=int(a["keepdims"]), noop_with_empty_axes=1)
        return
    b.node(_REDUCE[a["fn"]], [ins[0], _ints(b, layer, "axes", a["axes"])], list(layer.outputs),
           base=layer.name, keepdims=int(a["keepdims"]))


def resize(b: Builder, layer: Layer, ins: list[str]) -> None:
    """Resize by scales when float32 scales give exactly the sizes (then the two agree and
    scales keep a dynamic batch: sizes fix the lowered batch of 1, so nudenet's YOLOv8 with
    its x2 upsampling failed at batch 2); else by sizes when the scales are sizes / input;
    else by scales (the output was floor(input * scale), and the coordinate transform
    divides by the given scale, not by sizes / input)."""
    a = layer.attrs
    size_ins = ["", _ints(b, layer, "sizes", a["sizes"])] \
        if by_sizes(b.graph.types[layer.inputs[0]].shape, a["scales"], a["sizes"]) \
        else [b.const(f"{layer.name}.scales", np.asarray(a["scales"], np.float32)), ""]
    b.node("Resize", [ins[0], ""] + size_ins, list(layer.outputs), base=layer.name,
           mode=a["mode"], coordinate_transformation_mode=a["coordinate_transformation_mode"],
           nearest_mode=a["nearest_mode"])


# --- indexing and data movement ---------------------------------------------------------------


def gather(b: Builder, layer: Layer, ins: list[str]) -> None:
    op = "GatherElements" if layer.attrs.get("elements") else "Gather"
    b.node(op, ins[:2], list(layer.outputs), base=layer.name, axis=layer.attrs["axis"])


def arg_reduce(b: Builder, layer: Layer, ins: list[str]) -> None:
    a = layer.attrs
    b.node("ArgMax" if a["fn"] == "max" else "ArgMin", ins[:1], list(layer.outputs),
           base=layer.name, axis=a["axis"], keepdims=int(a["keepdims"]),
           select_last_index=int(a.get("select_last_index", False)))


def _slice_ends(b: Builder, layer: Layer) -> tuple[int, ...]:
    # IR end -1 with a negative step means "through index 0"; ONNX spells it INT64_MIN. A
    # slice that keeps a whole axis ends at INT64_MAX, so a dynamic dim (the batch) stays
    # whole at any size instead of being cut to the size the model was lowered at.
    a, shape = layer.attrs, b.graph.types[layer.inputs[0]].shape
    return tuple(INT64_MIN if e < 0 else INT64_MAX if (s, t, e) == (0, 1, shape[x]) else e
                 for s, e, x, t in zip(a["starts"], a["ends"], a["axes"], a["steps"]))


def slice_(b: Builder, layer: Layer, ins: list[str]) -> None:
    a = layer.attrs
    b.node("Slice", [ins[0], _ints(b, layer, "starts", a["starts"]),
                     _ints(b, layer, "ends", _slice_ends(b, layer)),
                     _ints(b, layer, "axes", a["axes"]), _ints(b, layer, "steps", a["steps"])],
           list(layer.outputs), base=layer.name)


def pad(b: Builder, layer: Layer, ins: list[str]) -> None:
    a = layer.attrs
    fill = ins[1] if len(ins) > 1 and ins[1] else (
        _scalar(b, layer, "value", a["value"], layer.inputs[0]) if a["mode"] == "constant"
        else "")
    b.node("Pad", [ins[0], _ints(b, layer, "pads", a["pads"]), fill], list(layer.outputs),
           base=layer.name, mode=a["mode"])


def split(b: Builder, layer: Layer, ins: list[str]) -> None:
    b.node("Split", [ins[0], _ints(b, layer, "sizes", layer.attrs["sizes"])],
           list(layer.outputs), base=layer.name, axis=layer.attrs["axis"])


def _reshape(b: Builder, layer: Layer, ins: list[str]) -> None:
    """Reshape to the IR's target, with -1 on the axis that carries a dynamic batch
    (`compiler.emit.batch`); allowzero 1: a literal 0 is an empty dim."""
    target, k = layer.attrs["shape"], b.batch_axis(layer.outputs[0])
    if k is not None:
        target = tuple(-1 if i == k else d for i, d in enumerate(b.graph.types[
            layer.outputs[0]].shape))
    b.node("Reshape", [ins[0], _ints(b, layer, "shape", target)], list(layer.outputs),
           base=layer.name, allowzero=1)


def concat(b: Builder, layer: Layer, ins: list[str]) -> None:
    """Concat; where the output carries a dynamic batch, a weight input (size 1 on the batch
    axis, `compiler.emit.batch`) is first expanded to the batch of a carried input."""
    k = b.batch_axis(layer.outputs[0])
    if k is not None:
        like = next(n for t, n in zip(layer.inputs, ins) if b.batch_axis(t) is not None)
        ins = [n if b.batch_axis(t) is not None else b.expanded(n, like, k, layer.name)
               for t, n in zip(layer.inputs, ins)]
    b.node("Concat", ins, list(layer.outputs), base=layer.name, axis=layer.attrs["axis"])


def _with_shape(op: str, **attrs: Any) -> Rule:
    def rule(b: Builder, layer: Layer, ins: list[str]) -> None:
        shape = _ints(b, layer, "shape", layer.attrs["shape"])
        b.node(op, [ins[0], shape], list(layer.outputs), base=layer.name, **attrs)
    return rule


def _plain(op: str, *attr_names: str) -> Rule:
    def rule(b: Builder, layer: Layer, ins: list[str]) -> None:
        attrs: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v)
                 for k, v in layer.attrs.items() if k in attr_names}
        b.node(op, ins, list(layer.outputs), base=layer.name, **attrs)
    return rule


def attention(b: Builder, layer: Layer, ins: list[str]) -> None:
    """ONNX opset-23 `Attention`, whose semantics the IR kind mirrors (causal offset by the
    past length, grouped-query heads, softcap)."""
    a = layer.attrs
    names = (("q_num_heads", "q_heads"), ("kv_num_heads", "kv_heads"))
    heads: dict[str, Any] = {k: int(a[h]) for k, h in names if a[h]}  # only 3-D name heads
    b.node("Attention", present(ins), list(layer.outputs), base=layer.name,
           scale=float(a["scale"]), is_causal=int(a["causal"]), softcap=float(a["softcap"]),
           **heads)


def rotary(b: Builder, layer: Layer, ins: list[str]) -> None:
    """ONNX opset-23 `RotaryEmbedding`; positions must be [B, S] there (a single start
    position, as onnxruntime-genai's contrib op takes, has no standard form)."""
    if len(ins) > 3 and ins[3] and len(b.graph.types[layer.inputs[3]].shape) != 2:
        raise ModelError(layer.name, "rotary with a start position (not [B, S] position ids) "
                         "cannot be written as ONNX RotaryEmbedding")
    a = layer.attrs
    b.node("RotaryEmbedding", present(ins), list(layer.outputs), base=layer.name,
           interleaved=int(a["interleaved"]), num_heads=int(a["num_heads"]),
           rotary_embedding_dim=int(a["rotary_dim"]))


FLOAT_RULES: dict[str, Rule] = {
    "conv": conv, "conv_transpose": conv_transpose, "linear": linear, "matmul": matmul,
    "eltwise": eltwise, "activation": activation, "norm": norm, "softmax": softmax,
    "pool": pool, "reduce": reduce, "resize": resize, "gather": gather, "cast": cast,
    "transpose": _plain("Transpose", "perm"), "concat": concat,
    "split": split, "slice": slice_, "pad": pad, "expand": _with_shape("Expand"),
    "reshape": _reshape, "identity": _plain("Identity"),
    "gather_nd": _plain("GatherND", "batch_dims"), "arg_reduce": arg_reduce,
    "attention": attention, "rotary": rotary,
}
