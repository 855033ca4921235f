"""The CPU cost kernel's streaming layers (elementwise, activation, norm, softmax, pool,
gather, copies) as one bandwidth-bound pass each, and view layers (no data moved).
Formulas and sources in `hwmodels.kernels.cpu`."""

from __future__ import annotations

import numpy as np

from hwmodels.kernels import threads
from hwmodels.kernels.cpu_layout import (
    ACC_NODES,
    EXP_LANE_OPS,
    EXP_LANE_OPS_NCNN,
    EXP_LANE_OPS_ORT,
    KIND_ACTIVATION,
    KIND_CONCAT,
    KIND_ELTWISE,
    KIND_GATHER,
    KIND_IDENTITY,
    KIND_NORM,
    KIND_TRANSPOSE,
    L_AIN,
    L_AOUT,
    L_FNODES,
    L_KIND,
    L_OPS,
    L_TRANS,
    L_WB,
    P_FP16,
    P_THREADS,
    RUNTIME_NCNN,
    RUNTIME_ORT,
)
from hwmodels.kernels.cpu_ncnn import (
    lrn_layout_bytes,
)
from hwmodels.kernels.cpu_roofline import (
    add_pass,
    home,
    kernel_lanes,
)
from hwmodels.kernels.jit import njit


@njit(cache=True)
def stream_elem_bytes(a: int, runtime: int, p: np.ndarray) -> float:
    """Element width of non-GEMM layers: onnxruntime runs them in fp32 (fp16 where the ISA
    has fp16 arithmetic and a = 16), ncnn in fp16 wherever the core has fp16 arithmetic (its
    default fp16 storage), else fp32; ideal keeps the activation dtype (int8 for a <= 8)."""
    if runtime == RUNTIME_ORT:
        return 2.0 if (a == 16 and p[P_FP16] > 0) else 4.0
    if runtime == RUNTIME_NCNN:  # fp16 storage where the core has fp16 arithmetic
        return 2.0 if p[P_FP16] > 0 else 4.0
    if a <= 8:
        return 1.0
    return 2.0 if (a == 16 and p[P_FP16] > 0) else 4.0


@njit(cache=True)
def exp_lane_ops(li: np.ndarray, runtime: int) -> float:
    """Transcendental work: the runtime's vector ops per exp (EXP_LANE_OPS_*, counted in
    its kernel's source) per exp / log / tanh / erf evaluation the layer makes (softmax: one
    per element; sigmoid, silu, gelu, tanh...: one per element; the clamps HardSigmoid /
    HardSwish none: ncnn's and onnxruntime's kernels are an affine map, a max and a min, then
    for HardSwish a multiply)."""
    per_exp = EXP_LANE_OPS
    if runtime == RUNTIME_ORT:
        per_exp = EXP_LANE_OPS_ORT
    elif runtime == RUNTIME_NCNN:
        per_exp = EXP_LANE_OPS_NCNN
    return float(li[L_TRANS]) * per_exp


@njit(cache=True)
def ort_eltwise_cost(li: np.ndarray, eb: float) -> float:
    """Eigen cost per element onnxruntime's elementwise kernel declares (`threads`): layers
    with transcendentals (`exp_lane_ops`) as Sigmoid, the rest as Add / Relu."""
    return threads.parallel_for_cost(eb, threads.EXP_COMPUTE_CYCLES if li[L_TRANS] > 0
                                     else threads.ELTWISE_COMPUTE_CYCLES)


@njit(cache=True)
def stream_layer(li: np.ndarray, a: int, runtime: int, p: np.ndarray, ch: np.ndarray,
                 traffic: np.ndarray, acc: np.ndarray) -> float:
    """Elementwise / norm / softmax / pool / gather / copy layers as one bandwidth-bound pass;
    return the layer's constant bytes (norm scales, biases) at their IR size."""
    eb = stream_elem_bytes(a, runtime, p)
    ain, aout = float(li[L_AIN]), float(li[L_AOUT])
    if runtime == RUNTIME_NCNN and li[L_KIND] == KIND_NORM:  # LRN: fp32, pack 1 (cpu_ncnn)
        add_pass(ain * lrn_layout_bytes(eb == 2.0), ain * 2.0, kernel_lanes(4.0, p),
                 home(ain * 4.0, p, ch), p, ch, traffic, acc)
        eb = 4.0
    if li[L_KIND] == KIND_GATHER:  # reads only the gathered rows, not the whole table
        nbytes = 2.0 * aout * eb
    else:
        nbytes = (ain + aout) * eb + float(li[L_WB]) * eb / 4.0
    lane_ops = float(li[L_OPS]) + exp_lane_ops(li, runtime)
    if runtime == RUNTIME_NCNN and (li[L_KIND] == KIND_CONCAT or li[L_KIND] == KIND_TRANSPOSE):
        # ncnn @a4d2ea1: channel Concat is a memcpy per input on the calling thread
        # (concat_arm.cpp, dims 3 axis 0: no omp), ShuffleChannel a serial loop
        # (shufflechannel_arm.cpp: no omp; ONNX channel shuffles convert to it)
        p = p.copy()
        p[P_THREADS] = 1.0
    if runtime == RUNTIME_ORT and li[L_FNODES] > 1:
        # onnxruntime (1.32 CPU provider) has no kernel for the op (HardSwish): it inlines the
        # ONNX function body, whose every later node (HardSwish's Mul) is a pass of its own
        # reading the layer's input and the node before's result. Not modelled: on x86 with
        # NCHWc kernels it folds a HardSwish that follows a float conv into that conv
        # (activation=HardSwish), as it does a Relu
        lane_ops -= function_tail(li, eb, p, ch, traffic, acc)
    if runtime == RUNTIME_ORT and (li[L_KIND] == KIND_ELTWISE or li[L_KIND] == KIND_ACTIVATION):
        p = p.copy()  # onnxruntime's cost-gated ParallelFor: threads the busiest one sets
        p[P_THREADS] = 1.0 / threads.parallel_for_share(aout, ort_eltwise_cost(li, eb), p[
            P_THREADS])
    add_pass(nbytes, lane_ops, kernel_lanes(eb, p), home(nbytes, p, ch), p, ch, traffic, acc)
    acc[ACC_NODES] += 1.0
    return float(li[L_WB])


@njit(cache=True)
def function_tail(li: np.ndarray, eb: float, p: np.ndarray, ch: np.ndarray,
                  traffic: np.ndarray, acc: np.ndarray) -> float:
    """Book the nodes after the first of an inlined ONNX function body (`L_FNODES`), each a
    binary elementwise pass (one op per element, read two tensors, write one) threaded as
    onnxruntime's Mul; return the lane ops they took from the layer's count."""
    aout = float(li[L_AOUT])
    nbytes = 3.0 * aout * eb
    q = p.copy()
    q[P_THREADS] = 1.0 / threads.parallel_for_share(aout, threads.parallel_for_cost(
        eb, threads.ELTWISE_COMPUTE_CYCLES), p[P_THREADS])
    tail = float(li[L_FNODES] - 1)
    for _ in range(li[L_FNODES] - 1):
        add_pass(nbytes, aout, kernel_lanes(eb, q), home(nbytes, q, ch), q, ch, traffic, acc)
        acc[ACC_NODES] += 1.0
    return tail * aout


@njit(cache=True)
def view_layer(li: np.ndarray, runtime: int, acc: np.ndarray) -> float:
    """Reshape-likes move no data; onnxruntime still dispatches a Reshape node (Identity is
    removed by its graph optimiser)."""
    if runtime == RUNTIME_ORT and li[L_KIND] != KIND_IDENTITY:
        acc[ACC_NODES] += 1.0
    return float(li[L_WB])
