"""GPTQ: second-order, error-compensating rounding of a linear layer's weights (Frantar et
al., "GPTQ", ICLR 2023, Algorithm 1), and bias correction.

For y = x W^T with calibration inputs X, the layer's output error ||X (W - Q)^T||^2 is a
quadratic form in each row of W - Q with the Hessian H = X^T X (the same Gram matrix HAWQ's
curvature rests on). GPTQ rounds input channel j of every row, then moves the rounding error
onto the channels not yet rounded, weighted by the inverse Hessian's Cholesky row, so that
they absorb it. The grid (scales and zero points, per tensor, channel or block) is the one
round-to-nearest uses: only the codes change, so every format that emits RTN codes emits
GPTQ codes. Columns are processed in lazy blocks of `LAZY` (the paper's batching).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import ModelError
from compiler.quantizers import QuantizedTensor, _expand, code_range, dequantize

LAZY = 128  # columns whose updates are applied together (the paper's B)


def inverse_cholesky(gram: np.ndarray, damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Upper Cholesky factor U of (H + damp * mean(diag H) I)^-1 (H^-1 = U^T U), and the mask
    of dead input channels (never active: diag H = 0), which get H_jj = 1."""
    h = np.array(gram, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    try:
        inv = np.linalg.inv(h)
        return np.linalg.cholesky((inv + inv.T) / 2).T, dead
    except np.linalg.LinAlgError as e:
        raise ModelError("gptq", f"the damped Hessian is not positive definite: {e}") from e


def _grid(qt: QuantizedTensor, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-element scale and zero point of `qt` (float64, shape of the weight)."""
    qp = qt.params
    scale = np.broadcast_to(_expand(qp.scale, shape, qp), shape).astype(np.float64)
    return scale, np.broadcast_to(_expand(qp.zero_point, shape, qp), shape).astype(np.float64)


def gptq_round(w: np.ndarray, gram: np.ndarray, rtn: QuantizedTensor,
               damp: float = 0.01) -> QuantizedTensor:
    """Codes for linear weight `w` [out, in] on the grid of its round-to-nearest
    quantisation `rtn`, chosen by GPTQ with Hessian `gram` = X^T X [in, in].

    Raises:
        ModelError: on mismatched shapes or a Hessian that damping cannot make definite.
    """
    if w.ndim != 2 or gram.shape != (w.shape[1],) * 2 or rtn.q.shape != w.shape:
        raise ModelError("gptq", f"weight {w.shape}, Hessian {gram.shape} and codes "
                         f"{rtn.q.shape} do not fit")
    u, dead = inverse_cholesky(gram, damp)
    scale, zp = _grid(rtn, w.shape)
    qmin, qmax = code_range(rtn.params.bits, rtn.params.symmetric)
    work = np.array(w, np.float64)
    work[:, dead] = 0.0  # a channel that is never active cannot help, nor hurt
    codes = np.empty(w.shape, np.int64)
    for i1 in range(0, w.shape[1], LAZY):
        i2 = min(i1 + LAZY, w.shape[1])
        err = np.zeros((w.shape[0], i2 - i1))
        for t, j in enumerate(range(i1, i2)):
            q = np.clip(np.rint(work[:, j] / scale[:, j]) + zp[:, j], qmin, qmax)
            codes[:, j] = q
            err[:, t] = (work[:, j] - (q - zp[:, j]) * scale[:, j]) / u[j, j]
            work[:, j + 1:i2] -= np.outer(err[:, t], u[j, j + 1:i2])
        work[:, i2:] -= err @ u[i1:i2, i2:]
    return QuantizedTensor(codes.astype(rtn.q.dtype), rtn.params)


def bias_correction(w: np.ndarray, qt: QuantizedTensor, x_mean: np.ndarray) -> np.ndarray:
    """What to add to the bias so that the quantised layer's mean output over the calibration
    inputs equals the float one: (W - Q) E[x] (Nagel et al., "Data-Free Quantization", 2019)."""
    return ((np.asarray(w, np.float64) - dequantize(qt)) @ np.asarray(x_mean, np.float64)
            ).astype(np.float32)
