"""Packing and packed-GEMM throughput: numba kernels against pure-numpy baselines, same run.

Prints one JSON object (and writes it to --out if given):
- `pack`: MB/s of packing a 4096x4096 int4 weight's codes into the MatMulNBits blob
  (input MB = K*N uint8 codes), numba `pack_matmulnbits_codes` vs a numpy slicing baseline;
- `quantize_and_pack`: the same from the float weight (`pack_matmulnbits`, minmax);
- `gemm`: GFLOP/s (2*M*N*K flops) of `packed_gemm_matmulnbits` from the packed bytes vs
  numpy dequantisation of the blob followed by `A @ W` (BLAS), and of `A @ W` alone on a
  pre-dequantised fp32 W (the BLAS ceiling, which pays no dequantisation).

Usage: PYTHONPATH=. python bench/bench_packing.py [--size 4096] [--repeats 3] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

from compiler import packing as P

BITS, BLOCK = 4, 32


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls, after one warm-up call (JIT compile, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_pack(codes: np.ndarray, zps: np.ndarray) -> np.ndarray:
    """Pure-numpy MatMulNBits 4-bit packing: transpose, pad with the zero point, pair nibbles."""
    k, n = codes.shape
    padded = np.repeat(zps, BLOCK, axis=1)
    padded[:, :k] = codes.T
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).reshape(n, -1, BLOCK // 2)


def numpy_dequant_matmul(a: np.ndarray, blob: P.MatMulNBitsBlob) -> np.ndarray:
    """Baseline GEMM: dequantise the blob with numpy, then BLAS."""
    rows = blob.b.reshape(blob.n, -1)
    codes = np.empty((blob.n, rows.shape[1] * 2), np.uint8)
    codes[:, 0::2], codes[:, 1::2] = rows & 0x0F, rows >> 4
    zps = np.repeat(P.unpack_rows(blob.zero_points, BITS, blob.k_blocks), BLOCK, axis=1)
    diff = codes.astype(np.int16) - zps
    w = diff.astype(np.float32) * np.repeat(blob.scales, BLOCK, axis=1)
    return a @ w[:, :blob.k].T


def bench_pack(size: int, repeats: int, rng: np.random.Generator) -> dict:
    k_blocks = -(-size // BLOCK)
    codes = rng.integers(0, 16, (size, size)).astype(np.uint8)
    zps = rng.integers(0, 16, (size, k_blocks)).astype(np.uint8)
    scales = np.ones((size, k_blocks), np.float32)
    blob = P.pack_matmulnbits_codes(codes, scales, zps, BITS, BLOCK)
    assert np.array_equal(blob.b, numpy_pack(codes, zps)), "baseline disagrees with numba"
    mb = codes.nbytes / 1e6
    t_numba = best_seconds(lambda: P.pack_matmulnbits_codes(codes, scales, zps, BITS, BLOCK),
                           repeats)
    t_numpy = best_seconds(lambda: numpy_pack(codes, zps), repeats)
    return {"input_mb": mb, "numba_mb_s": mb / t_numba, "numpy_mb_s": mb / t_numpy,
            "numba_s": t_numba, "numpy_s": t_numpy}


def bench_quantize_and_pack(size: int, repeats: int, rng: np.random.Generator) -> dict:
    w = rng.standard_normal((size, size)).astype(np.float32)
    seconds = best_seconds(lambda: P.pack_matmulnbits(w, BITS, BLOCK, symmetric=False),
                           max(1, repeats - 1))
    return {"input_mb": w.nbytes / 1e6, "mb_s": w.nbytes / 1e6 / seconds, "s": seconds}


def bench_gemm(size: int, m: int, repeats: int, rng: np.random.Generator) -> dict:
    w = rng.standard_normal((size, size)).astype(np.float32)
    blob = P.pack_matmulnbits(w, BITS, BLOCK, symmetric=False)
    a = rng.standard_normal((m, size)).astype(np.float32)
    w_fp32 = P.dequantize_matmulnbits(blob)
    ours, base = P.packed_gemm_matmulnbits(a, blob), numpy_dequant_matmul(a, blob)
    bound = 1e-5 * (np.abs(a) @ np.abs(w_fp32)) + 1e-5 * np.abs(base)
    assert np.all(np.abs(ours - base) <= bound), "packed GEMM disagrees with the baseline"
    gflop = 2.0 * m * size * size / 1e9
    t_packed = best_seconds(lambda: P.packed_gemm_matmulnbits(a, blob), repeats)
    t_numpy = best_seconds(lambda: numpy_dequant_matmul(a, blob), repeats)
    t_blas = best_seconds(lambda: a @ w_fp32, repeats)
    return {"m": m, "k": size, "n": size, "gflop": gflop,
            "packed_numba_gflop_s": gflop / t_packed,
            "numpy_dequant_matmul_gflop_s": gflop / t_numpy,
            "blas_fp32_only_gflop_s": gflop / t_blas}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "numba_threads": numba.get_num_threads(), "numpy": np.__version__,
                    "numba": numba.__version__},
        "bits": BITS, "block_size": BLOCK,
        "pack": bench_pack(args.size, args.repeats, rng),
        "quantize_and_pack": bench_quantize_and_pack(args.size, args.repeats, rng),
        "gemm": [bench_gemm(args.size, m, args.repeats, rng) for m in (1, 32)],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
