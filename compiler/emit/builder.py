"""`Builder`: collects the nodes and initializers of one emitted ONNX graph.

IR tensors keep their names in the emitted model; new tensors (quantised codes, scales,
intermediate results) get fresh names derived from the layer's, or, where that name is longer
than `STEM_LIMIT`, from a short stem standing for it (`short_names`: tf2onnx names run to
hundreds of characters, and a quantised layer repeats them in every scale, zero point and Q/DQ
output). Node names keep the layer's name (`validate` and `kernel_check` map nodes to layers
by it). The builder also knows which
tensors hold values already on an activation grid (the output of a `DequantizeLinear`), so
that quantising them again with the same parameters reuses the existing codes instead of
adding a second `QuantizeLinear`/`DequantizeLinear` pair; and it lets an emitter say that an IR
tensor *is* an existing ONNX tensor (an activation that is the identity on its input's grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.emit.batch import BatchFlow, declared, flow
from compiler.ir import Graph, Layer, Spec

# Unsigned activation code types by bit width (QuantizeLinear's output type, opset 21).
ACT_TYPES = {4: TensorProto.UINT4, 8: TensorProto.UINT8, 16: TensorProto.UINT16}


@dataclass(frozen=True)
class EmitOptions:
    """Choices the emitter makes that the IR does not fix.

    Attributes:
        accuracy_level: force MatMulNBits `accuracy_level` (0, 1, 2, 3 or 4) on every
            MatMulNBits layer; None (default) writes the plan's: 4 where the format policy
            runs activations in int8 per block (targets with int8 dot products), else 0.
        metadata: (key, value) pairs added to the model's metadata_props (the pipeline's
            target, method, budget and per-layer predicted latency).
        fixed_batch: why the file must declare the batch it was lowered at although the
            shapes let it flow (`edgesim.batch_check.per_sample_batch`: a run at batch 2
            mixed the samples); recorded as `edgesim.fixed_batch`.
    """

    accuracy_level: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # extra metadata_props (target, method, ...)
    fixed_batch: str = ""  # declare the lowered batch even where it flows, for this reason


@dataclass(frozen=True)
class Grid:
    """A per-tensor activation grid: `DequantizeLinear` of `codes` with these parameters."""

    scale: float
    zero_point: int
    bits: int
    codes: str  # the QuantizeLinear output holding the codes

    def key(self) -> tuple[float, int, int]:
        return (np.float32(self.scale).item(), self.zero_point, self.bits)

    def real(self, code: int) -> float:
        """The float32 value `DequantizeLinear` gives for `code`."""
        return float(np.float32(code - self.zero_point) * np.float32(self.scale))


# Lowest default-domain opset of the forms this emitter writes, where above 17 (the IR's).
_REDUCE_AXES_INPUT = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                      "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")
_OP_OPSET = {"Gelu": 20, "Mish": 18, "Attention": 23, "RotaryEmbedding": 23}
_ATTR_OPSET = {("AveragePool", "dilations"): 19, ("DequantizeLinear", "block_size"): 21,
               ("QuantizeLinear", "block_size"): 21}
_NEW_TYPES = (TensorProto.INT4, TensorProto.UINT4, TensorProto.INT16, TensorProto.UINT16)
BASE_OPSET = 17


def node_opset(node: onnx.NodeProto) -> int:
    """The lowest default-domain opset at which `node`, as written, is valid."""
    if node.domain not in ("", "ai.onnx"):
        return BASE_OPSET
    need = 18 if node.op_type in _REDUCE_AXES_INPUT and len(node.input) > 1 else \
        _OP_OPSET.get(node.op_type, BASE_OPSET)
    return max([need] + [v for (op, attr), v in _ATTR_OPSET.items()
                         if op == node.op_type and any(a.name == attr for a in node.attribute)])


def value_info(name: str, spec: Spec, dims: tuple[int | str, ...] | None = None
               ) -> onnx.ValueInfoProto:
    """A typed value_info: the source's declared dims (symbols kept) if given and of the
    same rank, else the IR's static shape."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    shape: list[int | str | None] = list(spec.shape)
    if dims is not None and len(dims) == len(shape):
        shape = [None if d == "?" else d for d in dims]  # None: a symbolic dim
    return helper.make_tensor_value_info(name, elem, shape)


class Builder:
    """Nodes and initializers of one graph under construction, with unique names."""

    def __init__(self, graph: Graph, options: EmitOptions = EmitOptions()) -> None:
        self.graph = graph
        self.options = options
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self._used: set[str] = set(graph.types) | set(graph.weights)
        self._node_names: set[str] = set()  # ONNX keeps node and tensor names apart
        self._alias: dict[str, str] = {}
        self.folded: dict[str, str] = {}  # layer written as no node -> where its output is made
        self._output_layer: dict[str, str] = {}  # folded graph output -> its layer's name
        self._grids: dict[str, Grid] = {}
        self._codes: dict[tuple[object, ...], str] = {}
        self._param_names: dict[tuple[object, ...], tuple[str, str]] = {}
        self._consts: dict[tuple[object, ...], list[str]] = {}  # sampled content -> initializers

    # --- names ---

    def fresh(self, base: str) -> str:
        """A tensor/node name not used yet, derived from `base`."""
        return _claim(base, self._used)

    def _node_name(self, base: str) -> str:
        """A node name not used yet: `base` itself when free, even if a tensor has it (a
        Keras export's Dense `dense_5` writes tensor `dense_5`; the report and `simulate`
        of the emitted file then name the layer alike)."""
        return _claim(base, self._node_names)

    def name(self, tensor: str) -> str:
        """The emitted name of IR tensor `tensor` ("" stays "")."""
        return self._alias.get(tensor, tensor) if tensor else ""

    def inputs(self, tensors: tuple[str, ...]) -> list[str]:
        """Emitted names of a layer's inputs (weights become initializers once a node reads
        them, so a quantised layer's float weight is never written)."""
        return [self.name(t) for t in tensors]

    def alias(self, tensor: str, onnx_name: str) -> None:
        """Declare that IR tensor `tensor` is the already emitted `onnx_name`."""
        self._alias[tensor] = onnx_name

    def fold(self, layer: Layer) -> None:
        """Write no node for one-input `layer`: its output is its input's emitted tensor.
        Recorded in `folded`: the layer's name -> the layer that makes that tensor (through
        other folded layers), or the graph input it is, so the report lists the file's layers;
        but a graph output's Identity (`model`) is the layer's node, under its name."""
        x, out = layer.inputs[0], layer.outputs[0]
        self.alias(out, self.name(x))
        if out in self.graph.outputs:  # `model` writes an Identity for it: the layer's node
            self._output_layer[out] = layer.name
            return
        made = self.graph.producers().get(x)
        self.folded[layer.name] = self.folded.get(made.name, made.name) if made else x

    def is_initializer(self, name: str) -> bool:
        return name in self.inits or name in self.graph.weights

    def array(self, name: str) -> np.ndarray:
        """The value of an initializer (or graph weight) `name`."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        return np.asarray(self.graph.weights[name])

    def _use(self, name: str) -> None:
        if name in self.graph.weights and name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(self.graph.weights[name]), name)

    # --- initializers and nodes ---

    def const(self, base: str, value: np.ndarray) -> str:
        """An initializer holding `value` (numpy dtype kept): the one already written with
        these contents if there is one, so layers that share a weight (an unrolled LSTM's
        steps, tied heads) write its codes and scales once."""
        value = np.asarray(value)  # (not ascontiguousarray: it makes a 0-d array 1-d)
        # Contents are matched exactly, not hashed: each trial of the range search emits
        # the whole model again, and sha256 over every weight was ~a quarter of resnet18's
        # emission. A sample of 64 elements picks the few same-shaped candidates to compare.
        flat = value.reshape(-1)
        sample = flat.tobytes() if flat.size <= 64 else flat[::flat.size // 64].tobytes()
        key = (value.dtype.str, value.dtype.name, value.shape, sample)
        names = self._consts.setdefault(key, [])
        for name in names:
            if flat.size <= 64 or numpy_helper.to_array(self.inits[name]).tobytes() \
                    == value.tobytes():
                return name
        name = self.fresh(base)
        self.inits[name] = numpy_helper.from_array(value, name)
        names.append(name)
        return name

    def tensor(self, base: str, data_type: int, dims: list[int],
               vals: Sequence[int | float] | bytes | np.ndarray,
               raw: bool = False) -> str:
        """A new initializer of an ONNX type numpy lacks (INT4, UINT4, ...)."""
        name = self.fresh(base)
        self.inits[name] = helper.make_tensor(name, data_type, dims, vals, raw=raw)
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str] | int = 1,
             base: str = "", domain: str = "", **attrs: Any) -> list[str]:
        """Append a node; `outputs` is a list of names or a count of fresh ones."""
        base = base or op_type.lower()
        for name in inputs:
            self._use(name)
        if isinstance(outputs, int):
            outputs = [self.fresh(f"{base}.{op_type}") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self._node_name(base),
                                           domain=domain, **attrs))
        return list(outputs)

    # --- activation grids ---

    def grid(self, name: str) -> Grid | None:
        """The grid `name` holds values on, if it is a DequantizeLinear output."""
        return self._grids.get(name)

    def _scalar(self, base: str, value: int, bits: int) -> str:
        if bits == 8:
            return self.const(base, np.array(value, np.uint8))
        if bits == 16:
            return self.const(base, np.array(value, np.uint16))
        return self.tensor(base, ACT_TYPES[bits], [], [value])

    def _per_channel(self, base: str, value: int, bits: int, channels: int) -> str:
        if bits in (8, 16):
            return self.const(base, np.full(channels, value, np.uint8 if bits == 8 else np.uint16))
        return self.tensor(base, ACT_TYPES[bits], [channels], [value] * channels)

    def codes(self, name: str, scale: float, zero_point: int, bits: int) -> str:
        """`QuantizeLinear(name)` on the grid (scale, zero_point, bits), written once per
        tensor and grid; a `DequantizeLinear` output on that very grid gives back its codes
        (requantising them is the identity)."""
        grid = Grid(scale, zero_point, bits, "")
        have = self._grids.get(name)
        if have is not None and have.key() == grid.key() and have.codes:
            return have.codes
        key = (name, grid.key())
        if key not in self._codes:
            s, z = self._params(name, scale, zero_point, bits)
            self._codes[key] = self.node("QuantizeLinear", [name, s, z],
                                         base=f"{name}.quantize")[0]
        return self._codes[key]

    def _params(self, name: str, scale: float, zero_point: int, bits: int) -> tuple[str, str]:
        key = (np.float32(scale).item(), zero_point, bits)
        if key not in self._param_names:
            self._param_names[key] = (
                self.const(f"{name}.scale", np.array(scale, np.float32)),
                self._scalar(f"{name}.zero_point", zero_point, bits))
        return self._param_names[key]

    def fake_quantize(self, name: str, scale: float, zero_point: int, bits: int,
                      out: str = "") -> str:
        """`DequantizeLinear(QuantizeLinear(name))`; reused when `name` is already on the grid
        (unless `out` asks for a particular output name)."""
        have = self._grids.get(name)
        if have is not None and have.key() == Grid(scale, zero_point, bits, "").key() \
                and not out:
            return name
        if bits < 8:
            return self._grid_arithmetic(name, scale, zero_point, bits, out)
        codes = self.codes(name, scale, zero_point, bits)
        s, z = self._params(name, scale, zero_point, bits)
        (real,) = self.node("DequantizeLinear", [codes, s, z], [out] if out else 1,
                            base=f"{name}.dequantize")
        self._grids[real] = Grid(scale, zero_point, bits, codes)
        return real

    def _grid_arithmetic(self, name: str, scale: float, zero_point: int, bits: int,
                         out: str) -> str:
        # A sub-8-bit grid as float arithmetic, `Clip(Round(x / s), -z, 2^b - 1 - z) * s`,
        # which is QuantizeLinear + DequantizeLinear's math: onnxruntime's QDQ selectors
        # fuse uint4 Q/DQ groups into QLinearConv, MaxPool and others without checking the
        # type, and the session then refuses the model (`tensor(uint4)` is no valid input).
        s = self.const(f"{name}.scale", np.array(scale, np.float32))
        lo = self.const(f"{name}.grid_low", np.array(-zero_point, np.float32))
        hi = self.const(f"{name}.grid_high", np.array((1 << bits) - 1 - zero_point, np.float32))
        (q,) = self.node("Div", [name, s], base=f"{name}.quantize")
        (q,) = self.node("Round", [q], base=f"{name}.round")
        (q,) = self.node("Clip", [q, lo, hi], base=f"{name}.saturate")
        (real,) = self.node("Mul", [q, s], [out] if out else 1, base=f"{name}.dequantize")
        self._grids[real] = Grid(scale, zero_point, bits, "")
        return real

    def float_view(self, name: str, shape: tuple[int, ...], batch: int | None = None) -> str:
        """`name` for a layer the plan keeps float: if `name` is a per-tensor
        DequantizeLinear output, the same values through a DequantizeLinear whose scale is
        repeated along an axis (the first after axis 0 longer than one, never the axis
        `batch` that carries a dynamic batch: a one-element scale counts as per tensor), so
        that onnxruntime's WeightBiasQuantization, which quantises the float weight of a
        Conv/Gemm fed by a per-tensor DQ, and its QDQ fusions leave the layer in float; the
        arithmetic is unchanged. `shape` is the tensor's."""
        axes = [(a, d) for a, d in enumerate(shape) if a >= 1 and a != batch and d > 1]
        if not axes:
            return name
        axis, channels = axes[0]
        grid = self._grids.get(name)
        if grid is None or not grid.codes:
            return name
        key = (name, f"per_channel_view_{axis}")
        if key not in self._codes:
            s = self.const(f"{name}.scale_per_channel", np.full(channels, grid.scale, np.float32))
            z = self._per_channel(f"{name}.zero_point_per_channel", grid.zero_point, grid.bits,
                                  channels)
            self._codes[key] = self.node("DequantizeLinear", [grid.codes, s, z], axis=axis,
                                         base=f"{name}.dequantize_float")[0]
        return self._codes[key]

    @cached_property
    def batch(self) -> BatchFlow:
        """Where the batch the source left dynamic lives in each tensor (`emit.batch`)."""
        found = flow(self.graph)
        if self.options.fixed_batch and found.dynamic:
            return replace(found, broken=self.options.fixed_batch)
        return found

    def batch_axis(self, tensor: str) -> int | None:
        """The axis of IR tensor `tensor` that carries a dynamic batch, if it has one."""
        return self.batch.axes.get(tensor) if self.batch.dynamic else None

    def expanded(self, name: str, like: str, axis: int, base: str) -> str:
        """Initializer `name` (size 1 on `axis`) expanded along `axis` to `like`'s size there
        at run time (Shape -> Expand)."""
        rank = len(self.array(name).shape)
        (dim,) = self.node("Shape", [like], base=f"{base}.batch", start=axis, end=axis + 1)
        before = [self.const(f"{base}.ones", np.ones(axis, np.int64))] if axis else []
        after = [self.const(f"{base}.ones", np.ones(rank - axis - 1, np.int64))] \
            if axis < rank - 1 else []
        parts = [*before, dim, *after]
        shape = self.node("Concat", parts, base=f"{base}.batch_shape", axis=0)[0] \
            if len(parts) > 1 else dim
        return self.node("Expand", [name, shape], base=f"{base}.batch_expand")[0]

    def opset(self) -> int:
        """The lowest default-domain opset the nodes written so far need, and at least the
        source model's (`Interface.opset`)."""
        face = self.graph.interface
        need = max([BASE_OPSET, face.opset if face else BASE_OPSET]
                   + [node_opset(n) for n in self.nodes])
        new_types = any(t.data_type in _NEW_TYPES for t in self.inits.values())
        return max(need, 21) if new_types else need

    def model(self, opset: int, ir_version: int, producer: str) -> onnx.ModelProto:
        """The finished model: graph inputs and outputs typed as the source declared them."""
        g = self.graph
        for out in g.outputs:  # an aliased output still needs its own name
            self._use(out)
            if self.name(out) != out:
                self.node("Identity", [self.name(out)], [out],
                          base=self._output_layer.get(out, f"{out}.identity"))
        dims = declared(g, self.batch)
        short_names(self.nodes, self.inits, set(g.types) | set(g.weights),
                    {layer.name for layer in g.layers})
        # filled in place: helper.make_graph copies every initializer into a graph and
        # make_model copies that graph again (resnet18 kept float: half its emission time)
        model = onnx.ModelProto(ir_version=ir_version, producer_name=producer)
        model.opset_import.extend([helper.make_opsetid("", opset),
                                   helper.make_opsetid("com.microsoft", 1)])
        graph = model.graph
        graph.name = g.name or "edgesim"
        graph.node.extend(self.nodes)
        graph.input.extend(value_info(t, g.types[t], dims.get(t)) for t in g.inputs)
        graph.output.extend(value_info(t, g.types[t], dims.get(t)) for t in g.outputs)
        graph.initializer.extend(self.inits.values())
        return model


def _claim(base: str, taken: set[str]) -> str:
    """`base`, or `base_i` for the first i that is free, added to `taken`."""
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


# Derived tensor names keep an IR name this long or shorter as their stem (`short_names`).
STEM_LIMIT = 24


def short_names(nodes: list[onnx.NodeProto], inits: dict[str, onnx.TensorProto],
                kept: set[str], layers: set[str]) -> None:
    """Rename, in place, the tensors the builder made (not the IR's `kept` ones) whose name
    starts with an IR tensor or layer name longer than `STEM_LIMIT` followed by a `.`: that
    name becomes a short stem `t<k>` (one per name), the suffix stays (`t3.scale`,
    `t3.quantize.QuantizeLinear`). Nothing reads these names back: the layer a tensor serves
    is its consumer node's, whose name is unchanged."""
    known = kept | layers
    made = {t for n in nodes for t in (*n.input, *n.output) if t and t not in kept} | \
        {t for t in inits if t not in kept}
    stems: dict[str, str] = {}
    rename: dict[str, str] = {}
    for name in sorted(made):
        parts = name.split(".")
        stem = next((p for p in (".".join(parts[:c]) for c in range(len(parts) - 1, 0, -1))
                     if p in known), None)
        if stem is None or len(stem) <= STEM_LIMIT:
            continue
        short = stems.setdefault(stem, f"t{len(stems)}")
        rename[name] = short + name[len(stem):]
    taken = (made - set(rename)) | kept
    if taken & set(rename.values()) or len(set(rename.values())) != len(rename):
        return  # a clash with an existing name (a source tensor called `t0.scale`): keep all
    for node in nodes:
        node.input[:] = [rename.get(t, t) for t in node.input]
        node.output[:] = [rename.get(t, t) for t in node.output]
    for old in [t for t in inits if t in rename]:
        tensor = inits.pop(old)
        tensor.name = rename[old]
        inits[tensor.name] = tensor
