"""Prefill and decode of a decoder on a CPU target: time to first token and tokens/s.

Decode (one token at context C, T threads) is `token_time_s`: each thread streams its share
of `bytes(C)` at one core's read bandwidth bw(1) and does not overlap that stream with its
kernel compute, and all threads together cannot beat the shared read roof bw(T):
`max(bytes / (T bw(1)) + compute(C, T), bytes / bw(T)) + node overheads`. `bytes` comes from
`edgesim.llm.traffic`, `bw(T)` is the target's effective read bandwidth at T threads
(`read_bandwidth_gbps_by_threads`; the sustained DRAM bandwidth when absent) and `compute` is
the linears' M = 1 GEMV kernels plus attention (2 x heads x head_dim x C MACs per layer) at the
fp32 rate. Prefill of P tokens: the linears are P-row GEMMs, the LM head over every position
(onnxruntime-genai's models output all logits) or the last only (llama-bench), attention is
`attention_prefill_s` (GroupQueryAttention: full P x P scores per head, heads in rounds over
the threads), the norms, RoPE, adds and SwiGLU by the bytes they move
(`edgesim.llm.elementwise`: past the last-level cache at P = 512, so from DRAM at bw(T)).
The GEMMs of MatMulNBits weights on Arm dot-product cores come from the kernels onnxruntime
runs (`hwmodels.kernels.cpu_nbits`: A quantised on one thread, MLAS's 128-row task partition,
KleidiAI / MLAS sdot tiles); other GEMMs from the project's CPU kernel model (`hwmodels.cost`).
Nothing here is fitted per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable
from edgesim.errors import UserError
from edgesim.llm.config import DecoderConfig
from edgesim.llm.elementwise import elementwise_prefill_s
from edgesim.llm.formats import WeightFormat, parse_format
from edgesim.llm.traffic import decode_bytes
from hwmodels import cost as hw_cost
from hwmodels.cpu import CpuTarget, nbits_int8_available, peak_macs_per_cycle
from hwmodels.kernels.cpu_layout import UNPACK_LANE_OPS
from hwmodels.kernels.cpu_nbits import gemm_seconds, has_kernel

# onnxruntime nodes per decoder block (assumed, as onnxruntime-genai's builder lays a block
# out): 7 MatMul(NBits) + 2 norms, rotary, attention, SiLU and gate Mul
GEMM_NODES_PER_BLOCK = 7
OTHER_NODES_PER_BLOCK = 6


@dataclass(frozen=True)
class LlmSimulation:
    """Predicted prefill and decode of one decoder on one target.

    Arrays are indexed [format, thread count(, context)].
    """

    model: str
    target: str
    formats: tuple[str, ...]
    threads: tuple[int, ...]
    contexts: np.ndarray            # int64 [C]
    prompt_len: int
    kv_dtype: str
    bytes_per_token: np.ndarray     # [F, C]
    decode_s: np.ndarray            # [F, T, C] seconds per decoded token
    decode_memory_bound: np.ndarray  # bool [F, T, C]
    ttft_s: np.ndarray              # [F, T]

    @property
    def tokens_per_s(self) -> np.ndarray:
        """Decode tokens/s, [F, T, C]."""
        return 1.0 / self.decode_s

    def to_dict(self) -> dict:
        """JSON-ready nested lists."""
        return {"model": self.model, "target": self.target, "formats": list(self.formats),
                "threads": list(self.threads), "contexts": self.contexts.tolist(),
                "prompt_len": self.prompt_len, "kv_dtype": self.kv_dtype,
                "bytes_per_token": self.bytes_per_token.tolist(),
                "decode_tokens_per_s": self.tokens_per_s.tolist(),
                "decode_memory_bound": self.decode_memory_bound.tolist(),
                "ttft_s": self.ttft_s.tolist()}


def read_bandwidth(target: CpuTarget, threads: np.ndarray) -> np.ndarray:
    """Effective DRAM read bytes/s at each thread count (the last entry beyond the table)."""
    table = target.read_bandwidth_gbps_by_threads or (target.dram.sustained_bandwidth_gbps,)
    idx = np.minimum(np.asarray(threads) - 1, len(table) - 1)
    return np.asarray(table)[idx] * 1e9


def token_time_s(nbytes: np.ndarray, compute: np.ndarray, target: CpuTarget,
                 threads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, memory bound) of one decode step of `nbytes` DRAM bytes and `compute` seconds
    of kernels at `threads` (arrays broadcast together), node overheads excluded.

    A thread's GEMV streams its weights from DRAM at one core's bandwidth and is not
    overlapped with its own sdot work (assumed: it keeps llama.cpp's Qwen2.5-0.5B Q4_0 run on
    a Pi 5 faster at 2 threads than at 1, bench/llm_published.csv, where full overlap would
    not; that run's 1-thread time is below the sum even at the sdot peak, so the sum
    over-counts one thread by up to ~32 %: the row's note); the threads share the DRAM read
    roof at `threads`. Memory bound: the shared roof sets the time, or a thread streams
    longer than it computes.
    """
    t = np.asarray(threads)
    stream = nbytes / (t * read_bandwidth(target, np.ones_like(t)))
    own, roof = stream + compute, nbytes / read_bandwidth(target, t)
    return np.maximum(own, roof), (roof >= own) | (stream >= compute)


def macs_per_s(target: CpuTarget, fmt: WeightFormat, threads: np.ndarray) -> np.ndarray:
    """Linear-layer MAC rate at each thread count: the kernel's peak x gemm_efficiency."""
    peak = peak_macs_per_cycle(target)
    if fmt.quantized:
        kind = "int8" if nbits_int8_available(target) else "fp32"
    else:
        kind = "fp16" if fmt.bits == 16 and peak["fp16"] else "fp32"
    return peak[kind] * target.clock_ghz * 1e9 * target.gemm_efficiency * np.asarray(threads)


def unpack_s_per_weight(target: CpuTarget, fmt: WeightFormat, threads: np.ndarray) -> np.ndarray:
    """Seconds per weight to unpack sub-byte weights in registers (0 for 8-bit and float)."""
    if not fmt.quantized or fmt.bits == 8:
        return np.zeros(np.shape(threads))
    lanes8, hz = target.simd_bits / 8.0, target.clock_ghz * 1e9
    return UNPACK_LANE_OPS / (lanes8 * target.fma_pipes * hz * np.asarray(threads))


def node_counts(cfg: DecoderConfig) -> tuple[int, int]:
    """(GEMM nodes, other nodes) of one run in onnxruntime-genai's layout (assumed above)."""
    return cfg.layers * GEMM_NODES_PER_BLOCK + 1, cfg.layers * OTHER_NODES_PER_BLOCK + 2


def overhead_s(cfg: DecoderConfig, target: CpuTarget, threads: np.ndarray,
               nodes: tuple[int, int] | None = None) -> np.ndarray:
    """Per-run node overheads: every node, plus a fork/join per GEMM node when threaded.
    `nodes`: (GEMM nodes, other nodes) of the actual graph (default `node_counts`)."""
    gemm, other = nodes or node_counts(cfg)
    fixed = gemm * target.gemm_overhead_us + other * target.op_overhead_us
    forks = np.where(np.asarray(threads) > 1, gemm * target.thread_overhead_us, 0.0)
    return (fixed + target.run_overhead_us + forks) * 1e-6



def fp32_rate(target: CpuTarget, threads: np.ndarray) -> np.ndarray:
    """fp32 GEMM MACs/s at each thread count (attention's SGEMMs)."""
    return macs_per_s(target, WeightFormat("fp32", 32), threads)


def nbits_kernel_path(target: CpuTarget, fmt: WeightFormat) -> bool:
    """Whether `fmt`'s GEMMs run the kernel-level MatMulNBits CompInt8 model
    (`hwmodels.kernels.cpu_nbits`): 4- or 8-bit weights on an Arm core with dot products."""
    return (fmt.quantized and target.arch == "arm64" and nbits_int8_available(target)
            and has_kernel(fmt.bits, fmt.block))


def _shapes(pairs: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    k, n = (np.array(x, np.int64) for x in zip(*pairs))
    return k, n


def linears_s(target: CpuTarget, fmt: WeightFormat, threads: int, m: int,
              shapes: Sequence[tuple[int, int]], bandwidth: float,
              runtime: str = "onnxruntime") -> float:
    """Seconds of `m`-row GEMMs of (in, out) `shapes` with weights in `fmt` at `threads`.

    Quantised weights on Arm dot-product cores: the MatMulNBits CompInt8 kernel model
    (`hwmodels.kernels.cpu_nbits.gemm_seconds`, `bandwidth` = DRAM bytes/s, inf for compute
    only); otherwise the project's CPU kernel model (`hwmodels.cost.evaluate`).
    """
    k, n = _shapes(shapes)
    if nbits_kernel_path(target, fmt):
        sec = gemm_seconds(m, n, k, fmt.bits, fmt.block, target, threads, bandwidth, runtime,
                           fmt.zero_point)
        return float(sec.sum())
    lat = hw_cost.evaluate(_gemm_table(k, n, m), np.array([_hw_bits(fmt)]), target,
                           threads=threads).latency_s
    return float(lat[:, 0].sum())


def decode_compute_s(cfg: DecoderConfig, target: CpuTarget, fmt: WeightFormat,
                     head: WeightFormat, threads: np.ndarray, contexts: np.ndarray,
                     runtime: str = "onnxruntime") -> np.ndarray:
    """Compute time of one decoded token, [T, C]: linears + head at their kernels' rates
    (the M = 1 GEMV kernels on Arm dot-product cores, `linears_s`; elsewhere the kernel's peak
    x gemm_efficiency plus unpacking), attention (2 x heads x head_dim x C MACs per layer) at
    the fp32 rate."""
    t = np.asarray(threads)[:, None]
    block = list(cfg.layer_linears().values())
    lin = (decode_linears_s(target, fmt, block, cfg.layers, t, runtime)
           + decode_linears_s(target, head, [(cfg.hidden, cfg.vocab)], 1, t, runtime))
    attn = 2.0 * cfg.layers * cfg.heads * cfg.head_dim * np.asarray(contexts, np.float64)
    return lin + attn[None, :] / fp32_rate(target, t)


def decode_linears_s(target: CpuTarget, fmt: WeightFormat, shapes: list[tuple[int, int]],
                     reps: int, threads: np.ndarray, runtime: str = "onnxruntime",
                     rows: int = 1) -> np.ndarray:
    """[T, 1] compute seconds of `reps` x the `rows`-row GEMMs of `shapes` (one decode step
    of `rows` sequences; every weight is unpacked once)."""
    if not nbits_kernel_path(target, fmt):
        params = reps * sum(i * o for i, o in shapes)
        return params * (rows / macs_per_s(target, fmt, threads)
                         + unpack_s_per_weight(target, fmt, threads))
    sec = [reps * linears_s(target, fmt, int(x), rows, shapes, np.inf, runtime)
           for x in np.asarray(threads).ravel()]
    return np.array(sec)[:, None]


def _gemm_table(k: np.ndarray, n: np.ndarray, m: int) -> LayerTable:
    size = len(k)
    rows, ones = np.full(size, m, np.int64), np.ones(size, np.int64)
    code = np.full(size, KIND_CODE["linear"], np.int32)
    cat = np.full(size, KIND_CATEGORY["linear"], np.int32)
    return LayerTable(tuple(f"linear{i}" for i in range(size)), code, cat, rows, n, k, ones,
                      rows * n * k, np.zeros(size, np.int64), n * k, rows * k, rows * n,
                      rows * k * 4, rows * n * 4, n * k * 4, np.ones(size), np.ones(size))


def linear_table(cfg: DecoderConfig, m: int) -> LayerTable:
    """The decoder's linears (every block's seven, then the head) as `m`-row GEMMs."""
    shapes = [s for _ in range(cfg.layers) for s in cfg.layer_linears().values()]
    k, n = _shapes([*shapes, (cfg.hidden, cfg.vocab)])
    return _gemm_table(k, n, m)


def _hw_bits(fmt: WeightFormat) -> tuple[int, int]:
    # hwmodels' (w_bits, a_bits): weight-only formats keep fp32 activations
    return (fmt.bits, 16 if fmt.bits == 16 else 32)


def attention_prefill_s(cfg: DecoderConfig, target: CpuTarget, threads: int,
                        prompt_len: int) -> float:
    """Attention of a P-token prefill: onnxruntime's CPU GroupQueryAttention runs, per query
    head in parallel over the threads (ceil(heads / T) rounds), two fp32 SGEMMs over the full
    P x P scores (the causal mask is applied in the softmax, not skipped): Q K^T and P V."""
    p = float(prompt_len)
    per_head = 2.0 * p * p * cfg.head_dim / fp32_rate(target, np.array(1))
    rounds = -(-cfg.heads // max(1, min(threads, cfg.heads)))
    return float(cfg.layers * rounds * per_head)


def prefill_s(cfg: DecoderConfig, target: CpuTarget, fmt: WeightFormat, head: WeightFormat,
              threads: np.ndarray, prompt_len: int, runtime: str = "onnxruntime",
              head_rows: int | None = None, nodes: tuple[int, int] | None = None
              ) -> np.ndarray:
    """Time to first token for a prompt of `prompt_len` tokens, [T].

    Linears as `prompt_len`-row GEMMs (`linears_s`: MatMulNBits CompInt8 kernels on Arm
    dot-product cores, else the project's CPU kernel model), the LM head over `head_rows`
    rows (default every position, as onnxruntime-genai's models output all logits; llama-bench
    computes the last one only), attention (`attention_prefill_s`), the element-wise steps'
    memory traffic (`edgesim.llm.elementwise`) and the other nodes at the target's per-node
    overhead.
    """
    p = int(prompt_len)
    rows = p if head_rows is None else int(head_rows)
    out = []
    for t in np.asarray(threads):
        ti = int(t)
        bw = float(read_bandwidth(target, np.array([ti]))[0])
        blocks = linears_s(target, fmt, ti, p, list(cfg.layer_linears().values()), bw, runtime)
        lm = linears_s(target, head, ti, rows, [(cfg.hidden, cfg.vocab)], bw, runtime)
        steps = elementwise_prefill_s(cfg, target, bw, p, runtime)
        out.append(cfg.layers * blocks + lm + attention_prefill_s(cfg, target, ti, p) + steps)
    other = (nodes or node_counts(cfg))[1] * target.op_overhead_us * 1e-6
    return np.array(out) + other


def simulate_llm(cfg: DecoderConfig, target: CpuTarget, formats: Sequence[str] = ("q4",),
                 threads: Sequence[int] | None = None, contexts: Sequence[int] = (512,),
                 prompt_len: int = 128, kv_dtype: str = "fp32", head_format: str | None = None,
                 share_kv_buffer: bool = True, nodes: tuple[int, int] | None = None
                 ) -> LlmSimulation:
    """Predict prefill (TTFT) and decode (tokens/s) of `cfg` on `target`.

    Args:
        cfg: the decoder's shape.
        target: a CPU target.
        formats: block-linear weight formats (`edgesim.llm.formats` spelling).
        threads: thread counts (default 1 .. cores).
        contexts: context lengths C at which one token is decoded.
        prompt_len: the prompt length P of the prefill.
        kv_dtype: KV-cache dtype (fp32 as onnxruntime-genai's CPU models, fp16, int8).
        head_format: LM head / embedding format (default: each weight format).
        share_kv_buffer: past and present KV share one buffer (onnxruntime-genai); False for
            a plain-onnxruntime model that concatenates past and new K/V.
        nodes: (GEMM nodes, other nodes) of the model's graph when known (a file's or the
            zoo's decomposed form); default onnxruntime-genai's layout.

    Raises:
        UserError: a bad format, thread count, context or prompt length (a context or prompt
            beyond the config's `max_position_embeddings` is one: RoPE was not trained there).
    """
    t = _check_ints(range(1, target.cores + 1) if threads is None else threads, "threads",
                    target.cores)
    trained = f" ({cfg.name}'s max_position_embeddings)"
    c = _check_ints(contexts, "contexts", cfg.max_context, trained)
    _check_ints([prompt_len], "prompt length", cfg.max_context, trained)
    fmts = [parse_format(f) for f in formats]
    heads = [parse_format(head_format) if head_format else f for f in fmts]
    nbytes = np.stack([decode_bytes(cfg, f, h, kv_dtype, c, share_kv_buffer)
                       for f, h in zip(fmts, heads)])
    comp = np.stack([decode_compute_s(cfg, target, f, h, t, c) for f, h in zip(fmts, heads)])
    step, memory_bound = token_time_s(nbytes[:, None, :], comp, target, t[None, :, None])
    over = overhead_s(cfg, target, t, nodes)[None, :, None]
    ttft = np.stack([prefill_s(cfg, target, f, h, t, prompt_len, nodes=nodes)
                     for f, h in zip(fmts, heads)])
    return LlmSimulation(cfg.name, target.name, tuple(formats), tuple(int(x) for x in t), c,
                         prompt_len, kv_dtype, nbytes, step + over, memory_bound,
                         ttft)


def _check_ints(values: Sequence[int], what: str, top: int | None = None,
                why: str = "") -> np.ndarray:
    a = np.asarray(list(values), dtype=np.int64)
    if a.size == 0 or (a < 1).any() or (top is not None and (a > top).any()):
        bound = f"1..{top}{why}" if top else ">= 1"
        raise UserError(what, f"each must be {bound}, got {a.tolist()}")
    return a
