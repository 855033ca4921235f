"""What every sensitivity method shares, and the two data-free baselines.

- `Sensitivity`: the result type of every method: `omega[l, b]`, the harm of giving
  quantisable layer `l` the weight bits `bits[b]` (larger = more harmful), which the exact
  allocator minimises in sum under a budget.
- `quantisable_layers`: conv / linear / matmul layers with a constant weight input: the layers
  the allocator chooses bits for.
- `weight_grid` / `quant_error`: the one place that says how a layer's weight is quantised at
  `bits` (the same grid emission writes), and the squared error `||Q_b(W) - W||^2` on it.
- `sensitivity` (the data-free proxy): `omega_l(b) = ||Q_b(W_l) - W_l||^2`, optionally divided
  by n_l (`per_param=True`: the mean squared error per weight, which favours big layers).
- `uniform`: a layer-agnostic baseline: `omega_l(b) = 4^-b` for every layer, the relative
  noise power of a b-bit uniform grid (each bit halves the step and quarters the noise). All
  layers then look alike, so the allocator's choice depends on the bits and the costs only: for
  a size budget it spreads bits evenly (the sum of a convex function of the bits is least when
  they are equal), which reproduces uniform precision wherever the budget allows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from compiler.errors import ModelError
from compiler.formats import WEIGHT_INPUT
from compiler.ir import Graph, Layer
from compiler.quantizers import Granularity, fake_quant_weight

DEFAULT_BITS: tuple[int, ...] = (2, 3, 4, 6, 8)
# Layer kind -> index of the input that holds its weight (when that input is a constant).
# the format policy's weight slots; a matmul's constant operand is priced as its weight
_SLOT: Mapping[str, int] = {k: WEIGHT_INPUT.get(k, 1) for k in ("conv", "linear", "matmul")}
# Weight-only linear layers at <= 4 bits are emitted as MatMulNBits: per block of 32 along K.
BLOCK_SIZE = 32
BLOCKED_MAX_BITS = 4


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields
class Sensitivity:
    """Per-layer sensitivity of the quantisable layers to their weight bits.

    Attributes:
        layers: names of the quantisable layers, in graph order.
        bits: int array [B] of the weight-bit choices.
        omega: float array [L, B]: harm of layer l at bits[b] (larger = more harmful).
        score: float array [L]: the method's per-layer factor (HAWQ: Hessian trace per
            parameter; LRP: contribution score per unit weight energy; proxy: 1 or 1/n_l).
        method: "hawq", "lrp", "proxy" or "uniform".
        iterations: estimator iterations (HAWQ) or calibration chunks (LRP); 0 if data-free.
        rse: float array [L]: relative standard error of each score (NaN where unknown).
        notes: what the method decided on the user's behalf (loss, clipping, ...).
        cut_short: True if a time budget stopped the analysis before its precision goal
            (`rse` then says the precision it reached).
    """

    layers: tuple[str, ...]
    bits: np.ndarray
    omega: np.ndarray
    score: np.ndarray
    method: str
    iterations: int = 0
    rse: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    cut_short: bool = False


@dataclass(frozen=True)
class WeightGrid:
    """How one layer's weight is quantised: `fake_quant_weight`'s grid arguments."""

    granularity: Granularity
    axis: int
    block_size: int | None = None


def weight_name(layer: Layer) -> str:
    """The tensor name of a quantisable layer's weight."""
    return layer.inputs[_SLOT[layer.kind]]


def is_quantisable(g: Graph, layer: Layer) -> bool:
    """True for a conv / linear / matmul layer whose weight input is a float constant."""
    index = _SLOT.get(layer.kind)
    if index is None or index >= len(layer.inputs) or not g.is_weight(layer.inputs[index]):
        return False
    return np.asarray(g.weights[layer.inputs[index]]).dtype.kind == "f"


def quantisable_layers(g: Graph) -> tuple[Layer, ...]:
    """The layers the allocator chooses weight bits for, in graph order."""
    return tuple(layer for layer in g.layers if is_quantisable(g, layer))


def weight_grid(layer: Layer, bits: int, ndim: int = 2) -> WeightGrid:
    """The weight grid emission uses for `layer` at `bits` (the single source of that choice).

    conv: per output channel (axis 0 of [Cout, Cin/g, *k]). linear (w [out, in]): per block of
    32 along `in` at <= 4 bits (MatMulNBits), else per output channel. matmul with a constant
    right operand ([..., K, N]): the same, with the channel axis last (per block only for 2-D).
    """
    channel_axis = 0 if layer.kind in ("conv", "linear") else ndim - 1
    blocked = layer.kind in ("linear", "matmul") and bits <= BLOCKED_MAX_BITS and ndim == 2
    if blocked:
        return WeightGrid("per_block", channel_axis, BLOCK_SIZE)
    return WeightGrid("per_channel", channel_axis)


def quant_error(layer: Layer, w: np.ndarray, bits: int) -> float:
    """`||Q_b(W) - W||^2` of weight `w` of `layer` on its emission grid, in float64."""
    w32 = np.asarray(w, np.float32)
    grid = weight_grid(layer, bits, w32.ndim)
    q = fake_quant_weight(w32, bits, grid.granularity, grid.axis, grid.block_size)
    diff = q.astype(np.float64) - w32.astype(np.float64)
    return float(np.vdot(diff, diff))


def quant_errors(g: Graph, layers: Sequence[Layer], bits: np.ndarray) -> np.ndarray:
    """`||Q_b(W_l) - W_l||^2` for every layer and bit choice: float64 [L, B] (`quant_error`'s
    sums, one numba pass per layer and bit choice: `compiler.sensitivity.quant_error`)."""
    return np.array([_layer_errors(layer, g.weights[weight_name(layer)], bits)
                     for layer in layers], dtype=np.float64).reshape(len(layers), len(bits))


def _layer_errors(layer: Layer, w: np.ndarray, bits: np.ndarray) -> np.ndarray:
    from compiler.sensitivity.quant_error import bit_errors  # numba loads with the first use

    ndim = np.ndim(w)

    def grid_of(b: int) -> tuple[str, int, int | None]:
        grid = weight_grid(layer, b, ndim)
        return grid.granularity, grid.axis, grid.block_size
    fast = bit_errors(w, [int(b) for b in bits], grid_of)
    # an empty or non-finite weight: the full path raises the error that names it
    return fast if fast is not None else np.array([quant_error(layer, w, int(b)) for b in bits])


def bit_choices(bits: Sequence[int]) -> np.ndarray:
    """Validated weight-bit choices as a read-only int array.

    Raises:
        ModelError: if empty, repeated, or outside 2..8.
    """
    arr = np.asarray(tuple(bits), dtype=np.int64)
    if arr.ndim != 1 or arr.size == 0 or len(set(arr.tolist())) != arr.size:
        raise ModelError("bits", f"need distinct weight-bit choices, got {tuple(bits)}")
    if arr.min() < 2 or arr.max() > 8:
        raise ModelError("bits", f"weight bits must lie in 2..8, got {tuple(bits)}")
    arr.flags.writeable = False
    return arr


def check_quantisable(g: Graph) -> tuple[Layer, ...]:
    """`quantisable_layers(g)`, raising ModelError if there is none."""
    layers = quantisable_layers(g)
    if not layers:
        raise ModelError(g.name, "no conv/linear/matmul layer with a constant weight to quantise")
    return layers


def weight_sizes(g: Graph, layers: Sequence[Layer]) -> np.ndarray:
    """n_l, the number of weights of each layer: int64 [L]."""
    return np.array([np.asarray(g.weights[weight_name(layer)]).size for layer in layers],
                    dtype=np.int64)


def sensitivity(g: Graph, calib_inputs: object = None, labels: object = None, *,
                bits: Sequence[int] = DEFAULT_BITS, per_param: bool = False) -> Sensitivity:
    """Data-free proxy: `omega_l(b) = ||Q_b(W_l) - W_l||^2` (divided by n_l if `per_param`).

    Args:
        g: the lowered model.
        calib_inputs: ignored (the proxy needs no data; accepted so every method in
            `compiler.sensitivity.METHODS` is called alike).
        labels: ignored, as `calib_inputs`.
        bits: weight-bit choices.
        per_param: divide by the layer's weight count (mean squared error per weight).

    Returns:
        A `Sensitivity` with `score` 1 (or 1/n_l with `per_param`).
    """
    layers, choices = check_quantisable(g), bit_choices(bits)
    score = 1.0 / weight_sizes(g, layers) if per_param else np.ones(len(layers))
    omega = score[:, None] * quant_errors(g, layers, choices)
    note = "omega = ||Q_b(W) - W||^2" + (" / n_l" if per_param else "")
    return Sensitivity(tuple(layer.name for layer in layers), choices, omega, score, "proxy",
                       rse=np.zeros(len(layers)), notes=(note,))


def uniform(g: Graph, calib_inputs: object = None, labels: object = None, *,
            bits: Sequence[int] = DEFAULT_BITS) -> Sensitivity:
    """Layer-agnostic baseline: `omega_l(b) = 4^-b` for every layer (see the module docstring).

    Args:
        g: the lowered model.
        calib_inputs: ignored.
        labels: ignored.
        bits: weight-bit choices.

    Returns:
        A `Sensitivity` whose rows are all equal.
    """
    layers, choices = check_quantisable(g), bit_choices(bits)
    omega = np.tile(4.0 ** -choices.astype(np.float64), (len(layers), 1))
    return Sensitivity(tuple(layer.name for layer in layers), choices, omega,
                       np.ones(len(layers)), "uniform", rse=np.zeros(len(layers)),
                       notes=("omega = 4^-b for every layer",))
