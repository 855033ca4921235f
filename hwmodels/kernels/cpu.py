"""The CPU cost kernel: one call over hardware configs x layers x bit choices.

Modules: `cpu_layout` (array layouts, path codes, constants), `cpu_roofline` (cache levels,
DRAM roof, threads, passes, roofline booking), `cpu_gemm` (GEMM, depthwise and Winograd
cores), `cpu_ncnn` (ncnn's tiles and thread split), `cpu_gemm_layer` (a GEMM-class layer on
its kernel path: core plus the passes the path adds), `cpu_stream` (streaming and view
layers); this one dispatches a layer to them, fills the result columns and runs the sweep.
The formulas and their sources are listed here for all of them. numba's on-disk cache keys a
function on its own file only: after editing one of the imported modules, clear
`hwmodels/kernels/__pycache__` (or touch the modules that import it) so callers recompile.

The glue (`hwmodels.cpu`) resolves a target into `params` [H, NP], `caches` [H, MAX_LEVELS, NC]
and `paths` [H, NPATH, NA] (per kernel path: MAC rate and the passes it adds). Sources:

- Kernel path per (layer, bits): `ort_path` follows onnxruntime 1.31's CPU kernels (DESIGN.md
  "Facts about onnxruntime"); `ideal_path` the fastest the ISA allows (T-MAC table lookup
  for low-bit weight-only GEMV: Wei et al., EuroSys 2025).
- GEMM (Goto & van de Geijn, TOMS 2008; Low et al., TOMS 2016, "Analytical modeling is enough
  for high-performance BLIS"): compute = ceil(units / threads) * tile_m * tile_n * k_padded /
  (rate * eff), units = ceil(m / tile_m) * ceil(n / tile_n) * groups (edge tiles cost a full
  tile). Blocking kc / mc / nc fills half of L1 / L2 / last level. Bytes served: L1 the
  register-tile reloads macs * (eb_a / tile_n + eb_w / tile_m); L2 the A micro-panels
  macs * eb_a / tile_n plus C tiles per kc block; last level the B panels per A block and A
  per B block; DRAM the compulsory bytes of operands living there, re-read when they exceed
  the last level. Roofline per level (Williams et al., CACM 2009): max over all of them.
- Threads: onnxruntime gives each thread >= MLAS_SGEMM_THREAD_COMPLEXITY = 64K MACs
  (core/mlas/lib/mlasi.h); a parallel op pays `thread_overhead_us` once. Compute on t threads
  takes 1 / (1 + (t - 1) * parallel_efficiency) of one thread's (`serial_share`: contention
  for the shared cache and memory, barriers); DRAM serves the one-thread sustained bandwidth
  at t = 1 and the all-core figure at t = cores, linear in between (`dram_bandwidth`); on
  t > 1 threads a kernel's compute side also waits dram * (1 - s / t) for that shared roof
  (s its growth from 1 to t threads; `contended`), so DRAM-heavy ops scale less than
  compute-bound ones (one-thread predictions unchanged). ncnn sizes its GEMM tiles from the
  whole L2 at any thread count, so its operand refetches are those of one thread, and its
  micro-kernel's operand panels come from L2 once they exceed L1 (`ncnn_panel_bytes`);
  ncnn's GEMMs also wait for a shared cache level as for DRAM (`shared_wait`).
  onnxruntime's elementwise / activation kernels split only when Eigen's cost model asks for
  a second thread, in CalculateParallelForBlock's blocks (`threads.parallel_for_share`).
  Its DequantizeLinear takes no thread pool at all (quantize_linear.cc
  `DequantizeLinearApply`: one loop on the calling thread; a 2-thread session's profile
  shows no parallel section for it at any size), so a DQ node's pass runs on one thread.
  ncnn splits its im2col conv GEMMs over output-channel blocks and depthwise convs over
  channel packs, on 8 x 12 register tiles, and writes the whole im2col matrix (1x1 convs
  included) before the GEMM (`hwmodels.kernels.cpu_ncnn`, each fact cited there); each float
  8 x 12 tile also sets up and stores its accumulators (`cpu_ncnn.TILE_EDGE_K` k steps).
- Winograd (ncnn profile): 3x3 stride-1 convs run as F(r, 3) (`winograd_tile`,
  `winograd_core`; Lavin & Gray, CVPR 2016): (r + 2)^2 GEMMs over the tiles plus input and
  output transform passes. ncnn reads a transformed input larger than the last cache level
  from DRAM once per round of its 8-channel output tasks (`cpu_ncnn.winograd_input_sweeps`),
  and repacks it once after the input transform (a read and a write of it).
- Passes (Q/DQ, activation quantisation, A packing, im2col, weight dequantisation, elementwise,
  norm, softmax, copies): max(lane_ops / (lanes * pipes), bytes / bandwidth) from the last
  level when they fit it, else DRAM; blocked buffers from L2. Each exp / log / tanh / erf
  evaluation a layer makes (`LayerTable.transcendentals`, from the op's definition) costs
  the runtime's vector ops per exp, counted in its kernel's source (EXP_LANE_OPS_ORT: MLAS,
  EXP_LANE_OPS_NCNN: ncnn's exp_ps); clamp activations (HardSigmoid, HardSwish) make none.
- Function ops (onnxruntime): an op it has no kernel for (HardSwish) runs as the nodes of its
  ONNX function body (`LayerTable.function_nodes`: HardSigmoid, then Mul), a pass and a node
  each (`cpu_stream.function_tail`).
- onnxruntime int8 (x86 terms in `hwmodels.cpu_x86`, chains in `hwmodels.ort_int8`): a
  QLinearConv inside an int8 chain has no Q / DQ pass; its int32 sums pass through MLAS's SSE2
  requantise loop (A_REQUANT weighs it); the AVX2 int8 depthwise kernel spends 10 uops per tap
  and 16 channels (A_DW_VEC_CYC) plus an indirection entry per tap (A_GATHER_CYC), packs no A;
  the NHWC im2col pays a memcpy call per output pixel and kernel row (A_IM2COL_CALL_CYC).
- Layout copies (onnxruntime): NCHWc reorders and NHWC Transposes its optimiser inserts
  (`hwmodels.ort_layout` places them, `cpu_inserted` costs them) are added to the output
  of this kernel by the glue (`hwmodels.cpu.run_kernel`).
- Overhead: per onnxruntime node, `gemm_overhead_us` (conv / matmul) or `op_overhead_us`
  (others, incl. Q and DQ nodes); `run_overhead_us` per inference, booked on the first layer.
- Energy (Horowitz, ISSCC 2014): instructions * pJ + MACs * pJ + lane ops * pJ (compute),
  bytes per cache level * pJ/byte (on-chip), DRAM bytes * pJ/byte.
"""

from __future__ import annotations

import numpy as np

from hwmodels.kernels import (
    cpu_gemm,
    cpu_gemm_layer,
    cpu_layout,
    cpu_roofline,
    cpu_stream,
    jit,
    threads,
)
from hwmodels.kernels.cpu_gemm_layer import gemm_layer
from hwmodels.kernels.cpu_layout import (
    ACC_E_MAC,
    ACC_INSTR,
    ACC_LANE_OPS,
    ACC_NODES,
    ACC_PEAK,
    ACC_T_OVERHEAD,
    BOUND_COMPUTE,
    C_E_BYTE,
    CATEGORY_GEMM,
    CATEGORY_VIEW,
    L_CAT,
    L_MACS,
    L_WB,
    MAX_LEVELS,
    NACC,
    NO,
    O_BOUND,
    O_CYCLES,
    O_E_COMPUTE,
    O_E_DRAM,
    O_E_ONCHIP,
    O_LATENCY,
    O_UTIL,
    O_WBYTES,
    P_CLOCK_HZ,
    P_CORES,
    P_E_DRAM,
    P_E_INSTR,
    P_E_OP,
    P_NLEVELS,
    P_OP_OVH,
    P_RUN_OVH,
    PARALLEL_MIN_EVALS,
    PATH_FUSED,
    RUNTIME_ORT,
)
from hwmodels.kernels.cpu_stream import stream_layer, view_layer
from hwmodels.kernels.jit import njit, prange


@njit(cache=True)
def finish(macs: float, p: np.ndarray, ch: np.ndarray, traffic: np.ndarray, acc: np.ndarray,
           w_bytes: float, res: np.ndarray) -> None:
    """Fill one result column: cycles, latency, energy split, bound, utilisation."""
    acc[ACC_T_OVERHEAD] += acc[ACC_NODES] * p[P_OP_OVH]
    cycles, bound = 0.0, BOUND_COMPUTE
    for b in range(4):
        cycles += acc[b]
        if acc[b] > acc[bound]:
            bound = b
    nl = int(p[P_NLEVELS])
    onchip = 0.0
    for j in range(nl):
        onchip += traffic[j] * ch[j, C_E_BYTE]
    res[O_CYCLES], res[O_LATENCY] = cycles, cycles / p[P_CLOCK_HZ]
    res[O_E_COMPUTE] = (acc[ACC_INSTR] * p[P_E_INSTR] + acc[ACC_E_MAC]
                        + acc[ACC_LANE_OPS] * p[P_E_OP])
    res[O_E_ONCHIP], res[O_E_DRAM] = onchip, traffic[nl] * p[P_E_DRAM]
    res[O_BOUND], res[O_WBYTES] = bound, w_bytes
    peak = acc[ACC_PEAK] * p[P_CORES]
    res[O_UTIL] = min(1.0, macs / (cycles * peak)) if cycles > 0 and peak > 0 else 0.0


@njit(cache=True)
def layer_cost(li: np.ndarray, path: int, w: int, a: int, w_store: float, runtime: int,
               w_res: bool, first: bool, p: np.ndarray, ch: np.ndarray, paths: np.ndarray,
               scratch: np.ndarray) -> None:
    """Cost one layer at (w, a) bits on one config into scratch[:NO] (the rest of `scratch`
    holds the traffic per level and the accumulators). The first layer also carries the
    runtime's per-inference overhead."""
    scratch[:] = 0.0
    res = scratch[:NO]
    traffic = scratch[NO:NO + MAX_LEVELS + 1]
    acc = scratch[NO + MAX_LEVELS + 1:]
    if first and runtime == RUNTIME_ORT:
        acc[ACC_T_OVERHEAD] += p[P_RUN_OVH]
    cat = li[L_CAT]
    if path == PATH_FUSED:   # runs in the previous kernel's output loop: no node, no pass
        w_bytes = float(li[L_WB])
    elif cat == CATEGORY_GEMM:
        w_bytes = gemm_layer(li, path, w, a, w_store, runtime, w_res, p, ch, paths, traffic,
                             acc)
    elif cat == CATEGORY_VIEW:
        w_bytes = view_layer(li, runtime, acc)
    else:
        w_bytes = stream_layer(li, a, runtime, p, ch, traffic, acc)
    finish(float(li[L_MACS]), p, ch, traffic, acc, w_bytes, res)


@njit(cache=True)
def evaluate_pair(hb: int, lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray,
                  choice: np.ndarray, params: np.ndarray, caches: np.ndarray, paths: np.ndarray,
                  runtime: int, out: np.ndarray) -> None:
    """Cost every layer for config h and bit choice b (hb = h * B + b) into out[:, h, :, b].
    The glue's decisions: `per_bit` [B, 3] (w_bits, a_bits, stored bytes per weight),
    `resident` [H, B] (weights stay in the last cache level), `choice` [H, L, B] (path)."""
    h, b = hb // per_bit.shape[0], hb % per_bit.shape[0]
    w, a, store = int(per_bit[b, 0]), int(per_bit[b, 1]), per_bit[b, 2]
    scratch = np.zeros(NO + MAX_LEVELS + 1 + NACC)
    for i in range(lay.shape[0]):
        layer_cost(lay[i], int(choice[h, i, b]), w, a, store, runtime, resident[h, b] > 0,
                   i == 0, params[h], caches[h], paths[h], scratch)
        for f in range(NO):
            out[f, h, i, b] = scratch[f]


@njit(cache=True)
def evaluate_serial(lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray,
                    choice: np.ndarray, params: np.ndarray, caches: np.ndarray,
                    paths: np.ndarray, runtime: int, out: np.ndarray) -> None:
    """Fill out [NO, H, L, B] on one thread."""
    for hb in range(params.shape[0] * per_bit.shape[0]):
        evaluate_pair(hb, lay, per_bit, resident, choice, params, caches, paths, runtime, out)


@njit(cache=True, parallel=True)
def evaluate_parallel(lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray,
                      choice: np.ndarray, params: np.ndarray, caches: np.ndarray,
                      paths: np.ndarray, runtime: int, out: np.ndarray) -> None:
    """Fill out [NO, H, L, B] on numba's threads, one (config, bit choice) pair per task."""
    for hb in prange(params.shape[0] * per_bit.shape[0]):
        evaluate_pair(hb, lay, per_bit, resident, choice, params, caches, paths, runtime, out)


def evaluate(lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray, choice: np.ndarray,
             params: np.ndarray, caches: np.ndarray, paths: np.ndarray, runtime: int,
             out: np.ndarray, *, serial: bool = False, engine: str | None = None) -> None:
    """Fill out [NO, H, L, B] in the engine `jit.engine` picks for this work (or `engine`);
    threads only pay off on large sweeps (their fork/join costs milliseconds on a loaded
    machine), never with `serial`."""
    work = params.shape[0] * lay.shape[0] * per_bit.shape[0]
    if jit.engine(work, engine) == "python":
        jit.python(evaluate_serial)(lay, per_bit, resident, choice, params, caches, paths,
                                    runtime, out)
        return
    parallel = (not serial and work >= PARALLEL_MIN_EVALS
                and params.shape[0] * per_bit.shape[0] > 1 and threads.available() > 1)
    run = jit.compiled(evaluate_parallel if parallel else evaluate_serial)
    run(lay, per_bit, resident, choice, params, caches, paths, runtime, out)


def __getattr__(name: str) -> object:
    """The array layout and the memory / compute helpers keep their address here
    (`hwmodels.kernels.cpu.P_CORES`, `.winograd_tile`, `.stream_layer`) while living in one
    module each."""
    for module in (cpu_layout, cpu_roofline, cpu_gemm, cpu_gemm_layer, cpu_stream):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
