"""How a `Graph` derives its `LayerTable`: one row per layer from its op's facts, its tensors'
types and the graph's edges (producers, shared constants, GEMM epilogues, planned formats).

`Graph.layer_table()` builds the table here once per graph and keeps it; `Graph.epilogues()`
answers from `epilogues`. This module reads the IR and the op table, so `compiler.ir` imports
it only when a table is first asked for (the op table imports `compiler.ir`).
"""

from __future__ import annotations

import numpy as np

from compiler.formats import FORMAT_CODE, NO_FORMAT, WEIGHT_INPUT, of_layer
from compiler.ir import (
    ACTIVATIONS,
    CATEGORY_GEMM,
    KIND_CATEGORY,
    KIND_CODE,
    Facts,
    Graph,
    Layer,
    LayerTable,
    Quant,
)
from compiler.ops import OPS

# Ops an array applies to its accumulators' outputs as they drain (Gemmini's AccumulatorScale:
# scale, bias, ReLU/ReLU6 clip; TPU v1's activation unit): see `epilogues`
EPILOGUE_ACTIVATIONS = frozenset({"relu", "clip"})
EPILOGUE_ELTWISE = frozenset({"add", "sub", "mul", "div"})
# Pooling right after a GEMM: TPU v1's activation unit "can also perform the pooling operations
# needed for convolutions" on the accumulators' outputs (Jouppi et al. ISCA 2017, sec. 2);
# Gemmini max-pools rows as it moves them out of its SRAMs (ucb-bar/gemmini StoreController)
EPILOGUE_POOLS = frozenset({"max", "avg", "global_avg", "global_max"})


def layer_table(g: Graph) -> LayerTable:
    """The per-layer facts of `g` as arrays (see `LayerTable`)."""
    rows = [_row(g, layer) for layer in g.layers]
    fused, index = epilogues(g), {x.name: i for i, x in enumerate(g.layers)}
    cols = list(zip(*rows)) if rows else [()] * 18
    ints = [np.asarray(c, dtype=np.int64) for c in cols[2:14]]
    # ints holds the 12 int64 columns between category and the two float ones
    return LayerTable(  # type: ignore[call-arg]
        tuple(layer.name for layer in g.layers),
        np.asarray(cols[0], dtype=np.int32), np.asarray(cols[1], dtype=np.int32),
        *ints, np.asarray(cols[14], dtype=np.float64), np.asarray(cols[15], dtype=np.float64),
        np.asarray([format_code(g, layer) for layer in g.layers], dtype=np.int64),
        np.asarray([index.get(fused.get(x.name, ""), -1) for x in g.layers], dtype=np.int64),
        _reads(g),
        np.asarray([_kernel_rows(g, x) for x in g.layers], dtype=np.int64),
        np.asarray([_channels(g, x) for x in g.layers], dtype=np.int64),
        *_read_before(g),
        np.asarray([any(t in g.outputs for t in x.outputs) for x in g.layers], dtype=bool),
        np.asarray(cols[16], dtype=np.int64),
        np.asarray(cols[17], dtype=np.int64),
        np.asarray([ACTIVATIONS.index(x.attrs["fn"]) if x.kind == "activation" else -1
                    for x in g.layers], dtype=np.int64),
        np.asarray([len(g.types[x.outputs[0]].shape) if x.outputs else 0 for x in g.layers],
                   dtype=np.int64),
    )


def _row(g: Graph, layer: Layer) -> tuple[int | float, ...]:
    """The table's scalar columns for one layer, in `LayerTable` field order (see
    `layer_table`), then its transcendentals and function nodes."""
    ins = [g.types[t] if t else None for t in layer.inputs]
    outs = [g.types[t] for t in layer.outputs]
    f: Facts = OPS[layer.kind].facts(ins, outs, **layer.attrs)
    acts = [g.types[t] for t in layer.inputs if t and t not in g.weights]
    wts = [g.types[t] for t in layer.inputs if t in g.weights]
    return (
        KIND_CODE[layer.kind], KIND_CATEGORY[layer.kind],
        f.m, f.n, f.k, f.groups, f.macs, f.ops,
        sum(s.size for s in wts), sum(s.size for s in acts), sum(s.size for s in outs),
        sum(s.nbytes for s in acts), sum(s.nbytes for s in outs), sum(s.nbytes for s in wts),
        1.0 if layer.w_density is None else layer.w_density,
        1.0 if layer.a_density is None else layer.a_density,
        f.transcendentals, f.function_nodes,
    )


def format_code(g: Graph, layer: Layer) -> int:
    """The planned `compiler.formats` row of `layer`, or -1 if it was never planned."""
    if layer.quant == Quant():
        return NO_FORMAT
    return FORMAT_CODE[of_layer(layer, g.const_weight(layer)).name]


def _read_before(g: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Bool [L] twice: the layer's constants were all read by earlier layers (`w_repeat`); its
    weight-slot constant was, its other constants not all (`w_shared`)."""
    seen: set[str] = set()
    repeat, shared = [], []
    for x in g.layers:
        consts = {t for t in x.inputs if t in g.weights}
        slot = WEIGHT_INPUT.get(x.kind, len(x.inputs))
        repeat.append(bool(consts) and consts <= seen)
        shared.append(slot < len(x.inputs) and x.inputs[slot] in seen and not consts <= seen)
        seen |= consts
    return np.asarray(repeat, dtype=bool), np.asarray(shared, dtype=bool)


def _channels(g: Graph, x: Layer) -> int:
    """Dim 1 of a rank-4 first output (NCHW channels); 0 otherwise."""
    spec = g.types.get(x.outputs[0]) if x.outputs else None
    shape = spec.shape if spec is not None else ()
    return int(shape[1]) if len(shape) == 4 and isinstance(shape[1], int) else 0


def _kernel_rows(g: Graph, x: Layer) -> int:
    """A conv's kernel height (its weight is [cout, cin / g, kh, kw]); 1 otherwise."""
    spec = g.types.get(x.inputs[1]) if x.kind == "conv" and len(x.inputs) > 1 else None
    shape = spec.shape if spec is not None else ()
    return int(shape[2]) if len(shape) == 4 and isinstance(shape[2], int) else 1


def _reads(g: Graph) -> np.ndarray:
    """int64 [L, 2]: the producer rows of each layer's first two inputs (-1: none)."""
    made = {t: i for i, x in enumerate(g.layers) for t in x.outputs}
    rows = [[made.get(t, -1) for t in (*x.inputs[:2], "", "")[:2]] for x in g.layers]
    return np.asarray(rows, dtype=np.int64).reshape(len(g.layers), 2)


def epilogues(g: Graph) -> dict[str, str]:
    """Layers an array can apply to a GEMM's results as they drain from its accumulators
    (TPU v1's activation unit, Jouppi et al. ISCA 2017 sec. 2; Gemmini's
    AccumulatorScale), each mapped to that GEMM: a bias add or a scale (`EPILOGUE_ELTWISE`
    with a constant second operand), a ReLU/clip or a pool (`EPILOGUE_POOLS`) whose input
    a GEMM, or an epilogue of one, produces and no other layer reads. An elementwise op of
    two activations (a residual Add) is not one: its second operand is not in the
    accumulators."""
    users, made = g.consumers(), g.producers()
    out: dict[str, str] = {}
    for x in g.layers:
        src = made.get(x.inputs[0]) if x.inputs else None
        if src is None or len(users.get(x.inputs[0], ())) != 1 \
                or x.inputs[0] in g.outputs or not _epilogue_op(g, x):
            continue
        if KIND_CATEGORY[src.kind] == CATEGORY_GEMM:
            out[x.name] = src.name
        elif src.name in out:
            out[x.name] = out[src.name]
    return out


def _epilogue_op(g: Graph, x: Layer) -> bool:
    """Whether `x` is an op an accumulator drain applies: a fused activation, or a binary
    elementwise op whose other operand is a constant no larger than the result."""
    fn = x.attrs.get("fn")
    if x.kind == "activation":
        return fn in EPILOGUE_ACTIVATIONS
    if x.kind == "pool":
        return fn in EPILOGUE_POOLS
    if x.kind != "eltwise" or fn not in EPILOGUE_ELTWISE or len(x.inputs) != 2:
        return False
    other = x.inputs[1]
    return other in g.weights and g.types[other].size <= g.types[x.inputs[0]].size
