"""linear op family: fully connected layers (`linear`) and activation-activation products
(`matmul`), lowered from ONNX Gemm and MatMul.

linear: inputs (x, w[out, in], b[out]?), y = x @ w.T + b for x of any rank (last axis = in).
matmul: inputs (a, b), numpy matmul semantics (1-D promotion, batch broadcasting).
A Gemm or MatMul with a constant 2-D weight becomes `linear` (with transB, alpha and beta
folded into new constants); anything else becomes `matmul` plus transpose/eltwise layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Layer, Spec, contiguous, frozen_attrs
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single, unbroadcast

# --- linear -------------------------------------------------------------------------------------


def _linear_shape(specs: Sequence[Spec | None]) -> tuple[Spec, ...]:
    x, w, b = specs[0], specs[1], specs[2] if len(specs) > 2 else None
    assert w is not None and x is not None
    if len(w.shape) != 2 or not x.shape or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear of {x.shape} with weights {w.shape}: in-features differ")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"linear bias {b.shape} must be ({w.shape[0]},)")
    return (Spec(x.shape[:-1] + (w.shape[0],), x.dtype),)


def _linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
                    ) -> tuple[np.ndarray]:
    y = x @ w.T.astype(x.dtype, copy=False)
    if b is not None:
        y = y + b.astype(x.dtype, copy=False)
    return (np.asarray(y, dtype=x.dtype),)


def _linear_vjp(gs: Sequence[np.ndarray | None], xs: Sequence[np.ndarray | None],
                ys: Sequence[np.ndarray]) -> tuple[np.ndarray | None, ...]:
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    assert x is not None
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    gx = (g @ w).astype(x.dtype, copy=False)
    assert w is not None
    gw = (g2.T @ x2).astype(w.dtype, copy=False)
    gb = None if b is None else g2.sum(0).astype(b.dtype, copy=False)
    return (gx, gw, gb)[:len(xs)]


def _linear_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec]) -> Facts:
    x, w = specs_in[0], specs_in[1]
    assert x is not None
    m = int(np.prod(x.shape[:-1], dtype=np.int64))
    assert w is not None
    n, k = w.shape
    return Facts(m=m, n=n, k=k, groups=1, macs=m * n * k)


# --- matmul -------------------------------------------------------------------------------------


def _matmul_dims(a: Sequence[int], b: Sequence[int]) -> tuple[tuple[int, ...], int, int, int]:
    """Broadcast batch shape and (M, K, N) of numpy matmul, 1-D operands promoted."""
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if not a or not b or a2[-1] != b2[-2]:
        raise ValueError(f"matmul of {tuple(a)} and {tuple(b)}: inner dimensions differ")
    return np.broadcast_shapes(a2[:-2], b2[:-2]), a2[-2], a2[-1], b2[-1]


def _matmul_shape(specs: Sequence[Spec | None]) -> tuple[Spec, ...]:
    a, b = specs[0], specs[1]
    assert a is not None
    assert b is not None
    batch, m, _, n = _matmul_dims(a.shape, b.shape)
    out = batch + ((m,) if len(a.shape) > 1 else ()) + ((n,) if len(b.shape) > 1 else ())
    return (Spec(out, a.dtype),)


def _matmul_forward(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray]:
    return (np.asarray(np.matmul(a, b.astype(a.dtype, copy=False)), dtype=a.dtype),)


def _matmul_vjp(gs: Sequence[np.ndarray | None], xs: Sequence[np.ndarray | None],
                ys: Sequence[np.ndarray]) -> tuple[np.ndarray | None, ...]:
    a, b = xs
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    # Promote 1-D operands as numpy does, so the cotangent is the plain 2-D/batched formula.
    assert a is not None
    a2 = a[None, :] if a.ndim == 1 else a
    assert b is not None
    b2 = b[:, None] if b.ndim == 1 else b
    assert a2 is not None
    g2 = g.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
                   + (a2.shape[-2], b2.shape[-1]))
    ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
    assert b2 is not None
    gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
    return ga.astype(a.dtype, copy=False), gb.astype(b.dtype, copy=False)


def _matmul_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec]) -> Facts:
    a, b = specs_in[0], specs_in[1]
    assert a is not None
    assert b is not None
    batch, m, k, n = _matmul_dims(a.shape, b.shape)
    groups = int(np.prod(batch, dtype=np.int64))
    if len(b.shape) <= 2:
        # A shared right operand is one GEMM over all batch rows.
        m, groups = m * groups, 1
    return Facts(m=m, n=n, k=k, groups=groups, macs=groups * m * n * k)


# --- lowering -----------------------------------------------------------------------------------


def _layer(kind: str, name: str, inputs: Sequence[str], output: str, **attrs: object) -> Layer:
    return Layer(name=name, kind=kind, inputs=tuple(inputs), outputs=(output,),
                 attrs=frozen_attrs(attrs))


def lower_matmul(node: Node) -> Lowered:
    """ONNX MatMul -> linear when the right operand is a constant matrix, else matmul."""
    a, b = node.spec(0), node.spec(1)
    if a is None or b is None:
        raise ModelError(node.name, "MatMul needs two inputs")
    w = node.const(1)
    if w is None or w.ndim != 2 or len(a.shape) < 1:
        return single("matmul", node, inputs=node.inputs[:2])
    name = f"{node.name}.weight"
    lowered = single("linear", node, inputs=(node.inputs[0], name))
    return Lowered(layers=lowered.layers, consts={name: contiguous(w.T)},
                   derived={name: f"{node.inputs[1]}^T"})


class _GemmPlan:
    """Collects the layers and constants of one Gemm lowering, threading the running tensor."""

    def __init__(self, node: Node, dtype: str) -> None:
        self.node, self.dtype = node, np.dtype(dtype)
        self.layers: list[Layer] = []
        self.consts: dict[str, np.ndarray] = {}
        self.derived: dict[str, str] = {}  # `Lowered.derived`

    def const(self, suffix: str, value: np.ndarray | float) -> str:
        name = f"{self.node.name}.{suffix}"
        self.consts[name] = np.asarray(value, dtype=self.dtype)
        return name

    def emit(self, kind: str, suffix: str, inputs: Sequence[str], **attrs: object) -> str:
        out = f"{self.node.name}.{suffix}"
        self.layers.append(_layer(kind, f"{self.node.name}.{suffix}", inputs, out, **attrs))
        return out

    def finish(self) -> Lowered:
        """The last layer takes the node's name and writes the node's output."""
        last = self.layers[-1]
        self.layers[-1] = Layer(self.node.name, last.kind, last.inputs, (self.node.outputs[0],),
                                last.attrs)
        return Lowered(layers=tuple(self.layers), consts=self.consts, derived=self.derived)


def _bias_vector(c: np.ndarray, m: int, n: int) -> np.ndarray | None:
    """C as a per-output vector, or None if it varies along the rows (M)."""
    full = np.broadcast_to(c, (m, n))
    if m == 0 or (m > 1 and c.ndim == 2 and c.shape[0] != 1):  # m == 0: an empty batch
        return None
    return np.ascontiguousarray(full[0])


def _add_c(plan: _GemmPlan, y: str, beta: float) -> str:
    """y + beta * C, with beta folded into C when C is constant."""
    node = plan.node
    c = node.const(2)
    if c is not None:
        operand = plan.const("c", beta * c)
    elif beta != 1.0:
        operand = plan.emit("eltwise", "beta_c", (node.inputs[2], plan.const("beta", beta)),
                            fn="mul")
    else:
        operand = node.inputs[2]
    return plan.emit("eltwise", "add_c", (y, operand), fn="add")


def _gemm_linear(plan: _GemmPlan, a: str, b: np.ndarray, trans_b: int, alpha: float,
                 beta: float, m: int, n: int) -> str:
    """Constant B: one linear layer with w = alpha * B' ([N, K]) and bias beta * C."""
    node = plan.node
    w = plan.const("weight", alpha * (b if trans_b else b.T))
    # Gemms reading one B the same way share one weight (their biases stay their own)
    plan.derived[w] = f"{node.inputs[1]}{'' if trans_b else '^T'}*{alpha!r}"
    c = node.const(2)
    bias = None if c is None else _bias_vector(c, m, n)
    inputs: tuple[str, ...] = (a, w)
    if bias is not None:
        inputs += (plan.const("bias", beta * bias),)
        plan.derived[inputs[2]] = f"{node.inputs[2]}*{beta!r}@{m}x{n}"
    y = plan.emit("linear", "linear", inputs)
    if node.input(2) and bias is None:
        y = _add_c(plan, y, beta)
    return y


def _gemm_matmul(plan: _GemmPlan, a: str, trans_b: int, alpha: float, beta: float,
                 m: int, n: int) -> str:
    """Activation B: matmul, then scale by alpha and add beta * C as eltwise layers."""
    node = plan.node
    b = node.inputs[1]
    if trans_b:
        b = plan.emit("transpose", "b_t", (b,), perm=(1, 0))
    y = plan.emit("matmul", "matmul", (a, b))
    if alpha != 1.0:
        y = plan.emit("eltwise", "alpha", (y, plan.const("alpha_k", alpha)), fn="mul")
    if node.input(2):
        y = _add_c(plan, y, beta)
    return y


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return len(shape) <= len(target) and all(
        s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def lower_gemm(node: Node, alpha: float = 1.0, beta: float = 1.0, transA: int = 0,
               transB: int = 0) -> Lowered:
    """ONNX Gemm: Y = alpha * A' @ B' + beta * C (C broadcast to [M, N])."""
    sa, sb = node.spec(0), node.spec(1)
    if sa is None or sb is None or len(sa.shape) != 2 or len(sb.shape) != 2:
        raise ModelError(node.name, "Gemm needs 2-D A and B")
    m = sa.shape[1] if transA else sa.shape[0]
    n = sb.shape[0] if transB else sb.shape[1]
    c = node.spec(2)
    if c is not None and not _broadcasts_to(c.shape, (m, n)):
        raise ModelError(node.name, f"Gemm C {c.shape} does not broadcast to ({m}, {n})")
    plan = _GemmPlan(node, sa.dtype)
    a = plan.emit("transpose", "a_t", (node.inputs[0],), perm=(1, 0)) if transA else node.inputs[0]
    b = node.const(1)
    if b is not None:
        _gemm_linear(plan, a, b, transB, float(alpha), float(beta), m, n)
    else:
        _gemm_matmul(plan, a, transB, float(alpha), float(beta), m, n)
    return plan.finish()


OPS: tuple[OpDef, ...] = (
    OpDef("linear", shape=_linear_shape, forward=_linear_forward, vjp=_linear_vjp,
          facts=_linear_facts),
    OpDef("matmul", shape=_matmul_shape, forward=_matmul_forward, vjp=_matmul_vjp,
          facts=_matmul_facts),
)
LOWER: dict[str, LowerRule] = {"Gemm": lower_gemm, "MatMul": lower_matmul}
