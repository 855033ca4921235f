"""The op contract: one `OpDef` per layer kind, and what a lowering rule sees and returns.

Conventions (every op family follows them; `tests/compiler/test_op_registry.py` checks them):

- `shape(specs, **attrs) -> tuple[Spec, ...]`: output types from input types. `specs[i]` is
  `None` for an absent optional input.
- `forward(*xs, **attrs) -> tuple[np.ndarray, ...]`: numpy forward, dtype-preserving (float32
  in, float32 out; float64 in, float64 out). Absent optional inputs arrive as `None`.
- `vjp(gs, xs, ys, **attrs) -> tuple[np.ndarray | None, ...]`: given output cotangents `gs`
  (one per output, `None` meaning zero), inputs `xs` and forward outputs `ys`, return one
  cotangent per input, `None` where the input is absent or not differentiable (integer
  indices, shapes).
- `facts(specs_in, specs_out, **attrs) -> Facts`: MACs / GEMM view / elementwise op count.
- optional `vjp_needed(gs, xs, ys, need, **attrs)`: `vjp` restricted to the inputs flagged
  in `need` (a backward pass pruned to some weights skips e.g. the cotangent of a constant
  scale, `compiler.executor.needed_vjp`).
- LRP rules are not part of an OpDef: their one table is `compiler.sensitivity.lrp.RULES`.

A lowering rule turns one ONNX node into layers: `rule(node: Node, **onnx_attrs) -> Lowered`.
Its keyword arguments are named after the ONNX attributes, with ONNX's defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Layer, Spec, frozen_attrs


@dataclass(frozen=True)
class OpDef:
    """Everything the compiler knows about one layer kind."""

    kind: str
    shape: Callable[..., tuple[Spec, ...]]
    forward: Callable[..., tuple[np.ndarray, ...]]
    vjp: Callable[..., tuple[np.ndarray | None, ...]]
    facts: Callable[..., Facts]
    # vjp(gs, xs, ys, need, **attrs): the cotangents of the inputs flagged in `need` only
    # (None for the rest), equal to `vjp`'s; for ops where skipping the others saves work
    vjp_needed: Callable[..., tuple[np.ndarray | None, ...]] | None = None


@dataclass(frozen=True)
class Node:
    """What a lowering rule sees of one ONNX node.

    `inputs`/`outputs` are tensor names ("" for an absent optional input); `specs` holds the
    type of every tensor known so far and `consts` the value of every constant tensor (weights,
    folded shape arithmetic), so that rules can read e.g. a Reshape's target shape.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    specs: Mapping[str, Spec]
    consts: Mapping[str, np.ndarray]

    def spec(self, i: int) -> Spec | None:
        """Type of input `i`, or None if absent."""
        if i >= len(self.inputs) or not self.inputs[i]:
            return None
        return self.specs[self.inputs[i]]

    def required_spec(self, i: int) -> Spec:
        """Type of input `i`, which the op needs: ModelError naming the node if it is absent."""
        spec = self.spec(i)
        if spec is None:
            raise ModelError(self.name, f"{self.op_type} needs input {i}, which is absent")
        return spec

    def const(self, i: int) -> np.ndarray | None:
        """Constant value of input `i`, or None if absent or not constant."""
        if i >= len(self.inputs) or not self.inputs[i]:
            return None
        return self.consts.get(self.inputs[i])

    def input(self, i: int) -> str:
        """Name of input `i`, "" if absent."""
        return self.inputs[i] if i < len(self.inputs) else ""

    def ints(self, i: int, what: str) -> tuple[int, ...] | None:
        """Constant integer input `i` (a Reshape's shape, a Slice's starts) as a tuple, None
        if absent; ModelError naming `what` if not constant."""
        if not self.input(i):
            return None
        value = self.const(i)
        if value is None:
            raise ModelError(self.name, f"{self.op_type} {what} (input {self.input(i)!r}) must "
                                        "be constant: edgesim needs static shapes")
        return tuple(int(v) for v in np.asarray(value).reshape(-1))

    def required_ints(self, i: int, what: str) -> tuple[int, ...]:
        """Constant integer input `i` the op needs: ModelError if absent or not constant."""
        ints = self.ints(i, what)
        if ints is None:
            raise ModelError(self.name, f"{self.op_type} needs its {what} (input {i}), absent")
        return ints

    def axis(self, axis: int, rank: int) -> int:
        """`axis` of a rank-`rank` tensor as a non-negative index (a scalar's axis 0 is 0):
        ModelError if out of range."""
        if not -rank <= axis < max(rank, 1):
            raise ModelError(self.name, f"{self.op_type} axis {axis} out of range for rank "
                                        f"{rank}")
        return axis % max(rank, 1)


@dataclass(frozen=True)
class Lowered:
    """Result of lowering one node: new layers (in order) and new constant tensors."""

    layers: tuple[Layer, ...] = ()
    consts: Mapping[str, np.ndarray] = field(default_factory=dict)
    # const name -> what it is derived from (source tensor and transform, e.g. "W^T"): the
    # lowering keeps one copy per key, so layers reading one initializer share one weight
    derived: Mapping[str, str] = field(default_factory=dict)


LowerRule = Callable[..., Lowered]


def no_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], **attrs: Any) -> Facts:
    """The facts of a view or copy: no arithmetic."""
    return Facts()


def unbroadcast(g: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Sum a broadcast cotangent `g` back down to an operand's `shape`."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, (gs, s) in enumerate(zip(g.shape, shape)) if s == 1 and gs != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def single(kind: str, node: Node, inputs: Sequence[str] | None = None,
           outputs: Sequence[str] | None = None, **attrs: Any) -> Lowered:
    """Lower `node` to one layer of `kind` (the common case)."""
    layer = Layer(
        name=node.name, kind=kind,
        inputs=tuple(node.inputs if inputs is None else inputs),
        outputs=tuple(node.outputs if outputs is None else outputs),
        attrs=frozen_attrs(attrs),
    )
    return Lowered(layers=(layer,))
