"""Timing micro-benchmarks `probe_host` measures this machine with: fp32 GEMM throughput
(onnxruntime MatMul, the MLAS kernel the CPU model prices), memory copy bandwidth on one and on
all threads (numpy), and onnxruntime's per-node, per-run and fork/join overheads (chains of
tiny ops built with onnx).
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def measure_gflops(threads: int, n: int, seconds: float) -> float:
    """Best fp32 GFLOP/s of an n x n by n x n onnxruntime MatMul on `threads` threads (CPU
    time on one thread, wall time on several; `_time_session`). onnxruntime's MLAS SGEMM is
    the kernel the CPU model prices; numpy's BLAS may pick a narrower one (scipy-openblas
    0.3.31 runs its Haswell AVX2 kernel on this project's AVX-512 Zen 5 host: 125 GFLOP/s at
    n = 192 against MLAS's 241 on one thread)."""
    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    x = np.ones((n, n), np.float32)
    t = _time_session(chain_model(_GEMM_CYCLE, 1, (n, n), {"w": w}), x, threads, seconds, min)
    return 2.0 * n ** 3 / t / 1e9


def measure_copy_gbps(nbytes: int, seconds: float) -> float:
    """Best (bytes read + bytes written) / time of a numpy copy of `nbytes` (GB/s)."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    # offset dst by 320 B: equal offsets modulo 4 KiB stall loads behind stores (4K aliasing)
    dst = np.empty(src.size + 64)[40:40 + src.size]
    np.copyto(dst, src)  # first touch: page faults are not bandwidth
    reps = max(1, int(2e6 // max(nbytes, 1)))  # amortise call overhead for small copies
    best, end, runs = 0.0, time.perf_counter() + seconds, 0
    while time.perf_counter() < end or runs < 3:
        runs += 1
        t0 = time.perf_counter()
        for _ in range(reps):
            np.copyto(dst, src)
        best = max(best, 2.0 * nbytes * reps / (time.perf_counter() - t0))
    return best / 1e9


def measure_copy_gbps_threads(nbytes: int, seconds: float, threads: int) -> float:
    """Best aggregate (bytes read + bytes written) / time of `threads` numpy copies of
    `nbytes / threads` each, started together (numpy releases the GIL while it copies plain
    dtypes, so they run on as many cores): the roof the threads share (GB/s)."""
    part = nbytes // threads // 8
    pairs = [(np.ones(part), np.empty(part + 64)[40:40 + part]) for _ in range(threads)]
    gate = threading.Barrier(threads)

    def copy(pair: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
        np.copyto(pair[1], pair[0])  # first touch: page faults are not bandwidth
        gate.wait()
        t0 = time.perf_counter()
        np.copyto(pair[1], pair[0])
        return t0, time.perf_counter()

    best, end, runs = 0.0, time.perf_counter() + seconds, 0
    with ThreadPoolExecutor(threads) as pool:
        while time.perf_counter() < end or runs < 3:
            runs += 1
            spans = list(pool.map(copy, pairs))
            wall = max(b for _, b in spans) - min(a for a, _ in spans)
            best = max(best, 2.0 * 8 * part * threads / wall)
    return best / 1e9


# one cycle of typical non-GEMM nodes (broadcast arithmetic, normalisation, softmax, ...)
# (op type, initializer roles, attributes) per node of the cycle
_Cycle = tuple[tuple[str, tuple[str, ...], dict[str, Any]], ...]  # attrs: ONNX attribute values
_STREAM_CYCLE: _Cycle = (("Add", ("b",), {}), ("Mul", ("b",), {}), ("Softmax", (), {"axis": -1}),
                 ("LayerNormalization", ("s", "b"), {"axis": -1}), ("Sigmoid", (), {}),
                 ("Sub", ("b",), {}))
_GEMM_CYCLE: _Cycle = (("MatMul", ("w",), {}),)


def chain_model(cycle: _Cycle, n_ops: int, shape: tuple[int, ...],
                 inits: dict[str, np.ndarray]) -> Any:
    """An ONNX chain of `n_ops` nodes on one float input, cycling through `cycle`'s
    (op, extra inputs, attributes)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    for i in range(n_ops):
        op, extra, attrs = cycle[i % len(cycle)]
        nodes.append(helper.make_node(op, [f"t{i}", *extra], [f"t{i + 1}"], **attrs))
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(f"t{n_ops}", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items() if k in used])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _time_session(model: Any, x: np.ndarray, threads: int, seconds: float,
                  pick: Any = statistics.median) -> float:
    """Median (or `pick`) time (s) of one onnxruntime run of `model` on `threads` intra-op
    threads: the calling thread's CPU time on one thread (robust to other load), wall time
    otherwise."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"t0": x}
    sess.run(None, feed)
    clock = time.thread_time if threads == 1 else time.perf_counter
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = clock()
        sess.run(None, feed)
        times.append(clock() - t0)
    return float(pick(times))


def measure_ort_overheads(cores: int, seconds: float) -> dict[str, float] | None:
    """onnxruntime's fixed costs in us: per non-GEMM node and per inference (chains of 6 and 60
    typical elementwise nodes on [1, 4, 16]: t(n) = run + n * op), per GEMM node (60 MatMuls
    [1,4,16] x [16,16]), and the fork/join of a parallel op (`measure_fork_join_us`). None
    when onnxruntime is not importable."""
    try:
        x = np.ones((1, 4, 16), np.float32)
        small = {"b": np.full(16, 0.5, np.float32), "s": np.ones(16, np.float32),
                 "w": np.eye(16, dtype=np.float32)}
        six, sixty = (_time_session(chain_model(_STREAM_CYCLE, n, x.shape, small), x, 1,
                                    seconds) for n in (6, 60))
        gemm = _time_session(chain_model(_GEMM_CYCLE, 60, x.shape, small), x, 1, seconds) / 60
        fork = measure_fork_join_us(cores, seconds) if cores > 1 else 0.0
    except ImportError:
        return None
    op = max((sixty - six) / 54, 1e-8)
    return {"op_overhead_us": op * 1e6, "gemm_overhead_us": max(gemm, op) * 1e6,
            "run_overhead_us": max(six - 6 * op, 0.0) * 1e6,
            "thread_overhead_us": max(fork, 0.1)}


# onnxruntime's LayerNormalization splits its rows over the whole pool at any size
# (layer_norm_impl.cc: TryBatchParallelFor(pool, norm_count, ..., 0), one batch per thread),
# so a chain of them on one row per thread is fork/join and almost nothing else
_FORK_CYCLE: _Cycle = (("LayerNormalization", ("s", "b"), {"axis": -1}),)
FORK_CHAIN = (6, 66)  # chain lengths: their difference over 60 nodes is one node's time


def measure_fork_join_us(cores: int, seconds: float) -> float:
    """Fork/join of one parallel onnxruntime op (us): the per-node time of a chain of
    LayerNormalization nodes on [1, cores, 16] (one 16-float row per thread, ~10 ns of work
    each) on all threads less on one thread, fastest runs. Unlike a split GEMM, nothing of
    the difference is compute that scaled imperfectly, so no `parallel_efficiency` enters."""
    x = np.ones((1, cores, 16), np.float32)
    inits = {"s": np.ones(16, np.float32), "b": np.zeros(16, np.float32)}
    node = {}
    for t in (1, cores):
        short, long = (_time_session(chain_model(_FORK_CYCLE, n, x.shape, inits), x, t,
                                     seconds, min) for n in FORK_CHAIN)
        node[t] = (long - short) / (FORK_CHAIN[1] - FORK_CHAIN[0])
    return (node[cores] - node[1]) * 1e6
