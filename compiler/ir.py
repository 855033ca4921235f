"""The lowered IR: plain, frozen data in topological order.

A `Graph` is a tuple of `Layer`s (producers before consumers), the constant tensors they read
(`weights`, read-only numpy arrays) and the static type (`Spec`) of every tensor. Passes are
functions `Graph -> Graph` that build new graphs with `dataclasses.replace`; networkx is built on
demand by `Graph.to_nx()` for graph algorithms and never stored.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import networkx as nx

# Every layer kind, in a fixed order so that `LayerTable.kind_code` is stable across runs.
# hwmodels/kernels read their codes from KIND_CODE (tests/hwmodels/test_kind_codes.py); after
# editing KINDS delete the kernels' numba cache (hwmodels/kernels/__pycache__/*.nb[ic]),
# which is keyed on the kernel files and would keep the old codes.
KINDS: tuple[str, ...] = (
    "conv", "conv_transpose", "linear", "matmul",            # MAC-based (GEMM view)
    "eltwise", "activation", "norm", "softmax", "pool",      # streaming compute
    "reduce", "resize", "gather", "cast",
    "transpose", "concat", "split", "slice", "pad", "expand",  # data movement (copies)
    "reshape", "identity",                                   # views: no data moves
    "gather_nd", "arg_reduce",                               # indexing (appended: codes kept)
    "attention", "rotary",                                   # decoders (appended: codes kept)
)
KIND_CODE: Mapping[str, int] = MappingProxyType({k: i for i, k in enumerate(KINDS)})

# What a cost model needs to know about a kind: MAC-based, streaming compute, copy, or free view.
CATEGORY_GEMM, CATEGORY_STREAM, CATEGORY_COPY, CATEGORY_VIEW = 0, 1, 2, 3
KIND_CATEGORY: Mapping[str, int] = MappingProxyType({
    **{k: CATEGORY_GEMM for k in ("conv", "conv_transpose", "linear", "matmul")},
    **{k: CATEGORY_STREAM for k in ("eltwise", "activation", "norm", "softmax", "pool",
                                    "reduce", "resize", "gather", "cast",
                                    "gather_nd", "arg_reduce", "rotary",
                                    "attention")},   # no weights: never given bits
    **{k: CATEGORY_COPY for k in ("transpose", "concat", "split", "slice", "pad", "expand")},
    **{k: CATEGORY_VIEW for k in ("reshape", "identity")},
})

# The activation functions (`compiler.ops.activation`), in the order `LayerTable.activation`
# codes them, so that a cost model names an activation without importing the op table
ACTIVATIONS: tuple[str, ...] = (
    "relu", "clip", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid", "hard_swish", "gelu",
    "erf", "silu", "sqrt", "exp", "log", "neg", "abs", "reciprocal", "softplus", "elu", "selu",
    "softsign", "threshold",
)

# elements of any one tensor the frontend accepts, initializer or layer output, checked before
# it allocates (2^34: 64 GiB of float32, beyond any edge model's largest weight)
MAX_TENSOR_ELEMS = 2**34


@dataclass(frozen=True)
class Spec:
    """Static type of a tensor: shape (all dims known) and numpy dtype name."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Quant:
    """Quantisation annotation of one layer; `None` bits mean float.

    The quantised weight itself (integer codes, scales, zero points) lives in `Graph.weights`
    under the names `compiler.fake_quant.quant_names(layer.name)` gives; the activation
    parameters are plain numbers here, one per activation input (weights excluded), in the
    order of `Layer.inputs`.
    """

    w_bits: int | None = None
    a_bits: int | None = None
    granularity: str = "per_channel"  # "per_tensor" | "per_channel" | "per_block"
    block: int | None = None          # block size along the reduction axis for per_block
    symmetric: bool = True
    clip: str = "minmax"              # weight range: "minmax" or "mse" (clip-ratio search)
    fmt: str = "float"                # emission format (compiler.emit.FORMATS)
    in_scale: tuple[float, ...] = ()  # QuantizeLinear scale per activation input
    in_zero_point: tuple[int, ...] = ()
    out_scale: float | None = None    # requantised output (QLinearConv / QLinearMatMul)
    out_zero_point: int | None = None
    reason: str = ""                  # why the layer runs the way it does (kept float, ...)


@dataclass(frozen=True)
class Facts:
    """What a layer costs, in a GEMM view: per group, out[m, n] += a[m, k] @ w[k, n].

    `macs` is the total multiply-accumulate count (groups * m * n * k for dense layers);
    `ops` counts the elementwise operations of non-MAC layers (one per output element
    per primitive operation); `transcendentals` the exp / log / tanh / erf evaluations among
    them (each a polynomial of many vector ops in a runtime's kernel: cost models price
    them apart, as XLA's cost analysis does); `function_nodes` the nodes of the op's ONNX
    function body, which a runtime with no kernel for the op inlines (HardSwish-14:
    HardSigmoid then Mul), 1 for an op that runs as one node.
    """

    m: int = 0
    n: int = 0
    k: int = 0
    groups: int = 1
    macs: int = 0
    ops: int = 0
    transcendentals: int = 0
    function_nodes: int = 1


def frozen_attrs(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return a read-only copy of a layer's attributes."""
    return MappingProxyType(dict(attrs))


@dataclass(frozen=True)
class Layer:
    """One lowered operation. Inputs name tensors produced earlier or held in `Graph.weights`;
    an empty name marks an absent optional input."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    quant: Quant = Quant()
    w_density: float | None = None  # measured fraction of nonzero weights
    a_density: float | None = None  # measured fraction of nonzero input activations


@dataclass(frozen=True)
class LayerTable:
    """Struct of arrays, one entry per layer: the contract between the IR and `hwmodels`.

    Byte counts are at the IR's own dtypes (fp32 for float tensors); cost models rescale them
    by the bit widths they evaluate.
    """

    names: tuple[str, ...]
    kind_code: np.ndarray   # int32, index into KINDS
    category: np.ndarray    # int32, CATEGORY_*
    m: np.ndarray           # int64, GEMM view per group
    n: np.ndarray
    k: np.ndarray
    groups: np.ndarray
    macs: np.ndarray        # int64
    ops: np.ndarray         # int64, elementwise ops of streaming layers
    w_elems: np.ndarray     # int64, elements of constant (weight) inputs
    a_in_elems: np.ndarray  # int64, elements of activation inputs
    a_out_elems: np.ndarray
    in_bytes: np.ndarray    # int64, activation input bytes
    out_bytes: np.ndarray
    w_bytes: np.ndarray
    w_density: np.ndarray   # float64, 1.0 where not measured
    a_density: np.ndarray
    # int64, the planned row of `compiler.formats.FORMATS` per layer; -1 (or None for all)
    # where the layer was never planned and cost models resolve the format from the bits
    fmt_code: np.ndarray | None = None
    # int64, where the layer is a GEMM's epilogue (`Graph.epilogues`: work an array can apply
    # to that GEMM's results as they drain) the GEMM's row, else -1; None where not derived
    epilogue_of: np.ndarray | None = None
    # int64 [L, 2], the rows producing the layer's first two inputs (-1: graph input, constant
    # or none): the edges a runtime's chain rules read (`hwmodels.ort_int8`); None where not
    # derived
    reads: np.ndarray | None = None
    # int64, kernel rows of a conv (the weight's dim 2; 1 for other layers): the memcpy calls
    # per output pixel of an NHWC im2col; None where not derived
    kernel_rows: np.ndarray | None = None
    # int64, dim 1 of the layer's first output where it has rank 4 (NCHW channels), else 0:
    # the layout rules of runtimes that block or transpose channels (`hwmodels.ort_layout`)
    channels: np.ndarray | None = None
    # bool, the layer reads only constants an earlier layer read (a weight several layers
    # share: an unrolled LSTM's steps, a tied head): stored once, at the first reader's row,
    # so its size counts there (`hwmodels.cost.evaluate`); each reader still streams it
    w_repeat: np.ndarray | None = None
    # bool, the layer's weight (its `compiler.formats.WEIGHT_INPUT` slot) is a constant an
    # earlier layer read, but not all its constants are (a Gemm sharing B with its own C):
    # only what the others add is stored again (`compiler.format_bytes.table_geometry`)
    w_shared: np.ndarray | None = None
    # bool, the layer writes a graph output: a runtime that ran it in another layout copies
    # it back to the model's declared one (`hwmodels.ort_layout`); None where not derived
    graph_output: np.ndarray | None = None
    # int64, exp / log / tanh / erf evaluations (`Facts.transcendentals`); None where not
    # derived (`exp_evaluations` then counts one per softmax element and none elsewhere)
    transcendentals: np.ndarray | None = None
    # int64, nodes of the layer's ONNX function body (`Facts.function_nodes`); None where not
    # derived (one node per layer)
    function_nodes: np.ndarray | None = None
    # int64, an activation layer's function as its index in `ACTIVATIONS` (-1 for other
    # layers): which activations a runtime fuses into the GEMM before them
    # (`hwmodels.cpu_choice.fused_activations`); None where not derived
    activation: np.ndarray | None = None
    # int64, rank of the layer's first output (a rank-2 linear is emitted as Gemm, others as
    # MatMul: `compiler.emit.float_ops`, which runtimes fuse differently); None where not derived
    out_rank: np.ndarray | None = None

    def __post_init__(self) -> None:
        # cost models memoise what they derive from a table on it (`memo`), so its arrays are
        # read-only: writable ones are copied first (the caller's arrays stay theirs)
        for name, value in list(vars(self).items()):
            if isinstance(value, np.ndarray) and value.flags.writeable:
                value = value.copy()
                value.flags.writeable = False
                object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.names)

    def exp_evaluations(self) -> np.ndarray:
        """int64 [L]: `transcendentals`, or where the table does not carry them one exp per
        softmax element and none elsewhere (the one transcendental a layer's kind alone
        implies)."""
        if self.transcendentals is not None:
            return self.transcendentals
        softmax = self.kind_code == KIND_CODE["softmax"]
        return np.where(softmax, self.a_out_elems, 0).astype(np.int64)

    def __getstate__(self) -> dict[str, Any]:
        # a table goes to sweep workers without its memo: they rebuild what they use
        return {k: v for k, v in vars(self).items() if k != "memo"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.__post_init__()  # unpickled arrays come back writable

    @functools.cached_property
    def memo(self) -> dict[Hashable, Any]:
        """Values cost models derive from this table and nothing else mutable (the layer
        array, every layer's kernel path per bit-choice set), built on first use by the
        model that reads them (`hwmodels.cost.memoised`): the table is frozen and its arrays
        read-only, so they cannot go stale; a `dataclasses.replace` starts an empty memo."""
        return {}


@dataclass(frozen=True)
class Interface:
    """The source model's interface, which emission keeps.

    Attributes:
        dims: declared dims of every graph input and output, a symbol (str) where the source
            left the dimension dynamic (the IR itself is static).
        opset: the source model's default-domain opset.
        producer: the source's producer_name and producer_version (kept in the emitted
            model's metadata_props).
    """

    dims: Mapping[str, tuple[int | str, ...]]
    opset: int
    producer: str = ""  # the source's producer_name and producer_version


@dataclass(frozen=True)
class Graph:
    """A lowered model: layers in topological order, weights, and every tensor's type."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    layers: tuple[Layer, ...]
    weights: Mapping[str, np.ndarray]
    types: Mapping[str, Spec]
    notes: tuple[str, ...] = ()  # what the frontend decided on the user's behalf
    # input -> the axis that holds samples, where it is not 0 (a recurrent state [2, B, H]:
    # 1); None = the input has no batch axis. Rank-0 inputs never have one.
    batch_axes: Mapping[str, int | None] = field(default_factory=lambda: MappingProxyType({}))
    interface: Interface | None = None  # the source model's declared I/O and opset

    def batch_axis(self, name: str) -> int | None:
        """The axis of input `name` that holds samples (None: it has none)."""
        return self.batch_axes.get(name, 0) if self.types[name].shape else None

    def layer(self, name: str) -> Layer:
        """Return the layer called `name`."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def is_weight(self, tensor: str) -> bool:
        return tensor in self.weights

    def producers(self) -> dict[str, Layer]:
        """Map each tensor produced by a layer to that layer."""
        return {out: layer for layer in self.layers for out in layer.outputs}

    def consumers(self) -> dict[str, list[Layer]]:
        """Map each tensor to the layers that read it, in graph order."""
        users: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for name in layer.inputs:
                if name:
                    users.setdefault(name, []).append(layer)
        return users

    def to_nx(self) -> nx.DiGraph[str]:
        """Layer-level dataflow graph (edges carry the tensor name)."""
        import networkx as nx  # on demand: importing it costs every edgesim process ~0.2 s

        g: nx.DiGraph[str] = nx.DiGraph()
        made = self.producers()
        for layer in self.layers:
            g.add_node(layer.name, kind=layer.kind)
            for t in layer.inputs:
                if t in made:
                    g.add_edge(made[t].name, layer.name, tensor=t)
        return g

    def layer_table(self) -> LayerTable:
        """Per-layer facts as arrays (see `LayerTable`, built by `compiler.graph_table`), made
        on the first call and shared by later ones, with the cost models' memo on it: the
        graph is frozen and the table read-only, and a pass's `dataclasses.replace` makes a
        new graph, so it cannot go stale (a PP-OCR compile asked its graph 11 times, 12 ms a
        table)."""
        return self._table

    @functools.cached_property
    def _table(self) -> LayerTable:
        from compiler.graph_table import layer_table  # it imports this module

        return layer_table(self)

    def epilogues(self) -> dict[str, str]:
        """Layers an array applies to a GEMM's results as they drain from its accumulators,
        each mapped to that GEMM (`compiler.graph_table.epilogues`)."""
        from compiler.graph_table import epilogues  # it imports this module

        return epilogues(self)

    def const_weight(self, layer: Layer) -> bool:
        """Whether `layer` reads a constant in its weight slot (either operand of a matmul)."""
        from compiler.formats import WEIGHT_INPUT  # the policy table imports this module

        if layer.kind == "matmul":
            return any(t in self.weights for t in layer.inputs[:2])
        slot = WEIGHT_INPUT.get(layer.kind)
        return slot is not None and len(layer.inputs) > slot and layer.inputs[slot] in self.weights


def is_placeholder(array: np.ndarray) -> bool:
    """A shape-only weight (`compiler.frontend.load(..., shapes_only=True)`): one value
    broadcast to the shape, every stride 0, no memory behind it."""
    return array.size > 1 and not any(array.strides)


def contiguous(array: np.ndarray) -> np.ndarray:
    """`np.ascontiguousarray`, except that a shape-only placeholder stays one (copying it
    would allocate the weights it stands for)."""
    return array if is_placeholder(array) else np.ascontiguousarray(array)


def readonly(array: np.ndarray) -> np.ndarray:
    """Return `array` as a contiguous, read-only numpy array (weights are never mutated); a
    shape-only placeholder stays as it is (already read-only, see `is_placeholder`)."""
    if is_placeholder(array) and not array.flags.writeable:
        return array
    out = np.require(array, requirements="C")  # keeps 0-d arrays 0-d, unlike ascontiguousarray
    if out is array:
        out = out.view()
    out.flags.writeable = False
    return out
