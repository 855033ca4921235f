"""Throughput of the MAC-array models. Prints JSON.

(a) Analytical model: layer-evaluations per second, one evaluation = one (layer, bit choice,
    hardware config) triple, on 2 numba threads, measured after a warm call. Workload: the
    21 GEMM layers of ResNet-18 plus 17 ReLU/add layers, 6 bit choices, a grid of H configs
    (rows, cols, dataflow, DRAM bandwidth, SRAM), dense and with zero skipping.
(b) Data-driven sparse model: simulated MACs per second (one MAC = one (m, n, k) triple of the
    GEMM, whether skipped or not) for ResNet-18's layer1 conv (M=3136, K=576, N=64) with
    50%-dense random masks, per dataflow, on one thread.

Usage: python bench/bench_macarray.py [--configs 2000] [--repeats 5]
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable  # noqa: E402
from hwmodels import configs  # noqa: E402
from hwmodels.macarray import evaluate_configs  # noqa: E402
from hwmodels.sparsity import data_driven_cycles  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

# (M, N, K, times) of ResNet-18's convs and fc at 224x224, batch 1
RESNET18_GEMMS = [(12544, 64, 147, 1), (3136, 64, 576, 4), (784, 128, 576, 1),
                  (784, 128, 64, 1), (784, 128, 1152, 3), (196, 256, 1152, 1),
                  (196, 256, 128, 1), (196, 256, 2304, 3), (49, 512, 2304, 1),
                  (49, 512, 256, 1), (49, 512, 4608, 3), (1, 1000, 512, 1)]
BITS = np.array([[32, 32], [16, 16], [8, 8], [4, 8], [2, 8], [4, 4]])


def resnet18_table(rng: np.random.Generator) -> LayerTable:
    """ResNet-18's GEMMs plus elementwise layers, with measured-looking densities."""
    gemms = [(m, n, k) for m, n, k, times in RESNET18_GEMMS for _ in range(times)]
    eltwise = [(m * n,) for m, n, _ in gemms[:17]]
    count = len(gemms) + len(eltwise)
    m = np.array([g[0] for g in gemms] + [0] * len(eltwise), dtype=np.int64)
    n = np.array([g[1] for g in gemms] + [0] * len(eltwise), dtype=np.int64)
    k = np.array([g[2] for g in gemms] + [0] * len(eltwise), dtype=np.int64)
    ops = np.array([0] * len(gemms) + [e[0] for e in eltwise], dtype=np.int64)
    a_in, a_out = np.where(ops > 0, ops, m * k), np.where(ops > 0, ops, m * n)
    kinds = ["conv"] * len(gemms) + ["activation"] * len(eltwise)
    return LayerTable(
        tuple(f"layer{i}" for i in range(count)),
        np.array([KIND_CODE[x] for x in kinds], np.int32),
        np.array([KIND_CATEGORY[x] for x in kinds], np.int32),
        m, n, k, np.ones(count, np.int64), m * n * k, ops, k * n, a_in, a_out, 4 * a_in,
        4 * a_out, 4 * k * n, rng.uniform(0.3, 1.0, count), rng.uniform(0.3, 1.0, count))


def config_grid(count: int, sparsity: str) -> configs.MacArrayConfigs:
    base = dataclasses.replace(load_target("sparse-mac-32x32"), sparsity=sparsity)
    grid = configs.grid(base, rows=[8, 16, 32, 64], cols=[8, 16, 32, 64],
                        dataflow=["os", "ws", "is"], dram_bandwidth_gbps=[2.0, 8.0, 32.0],
                        ifmap_sram_kib=[32.0, 256.0])
    reps = -(-count // len(grid))
    return configs.from_targets((grid * reps)[:count])


def time_best(call, repeats: int) -> float:
    """Best wall time of `repeats` calls (after the caller's warm call)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def analytical(table: LayerTable, n_configs: int, repeats: int) -> dict:
    out = {}
    for sparsity in ("none", "skip_both"):
        cfg = config_grid(n_configs, sparsity)
        evaluate_configs(table, BITS, cfg)  # warm
        wall = time_best(lambda cfg=cfg: evaluate_configs(table, BITS, cfg), repeats)
        evals = len(cfg) * len(table) * len(BITS)
        out[sparsity] = {"configs": len(cfg), "layers": len(table), "bit_choices": len(BITS),
                         "evaluations": evals, "wall_s": wall, "evals_per_s": evals / wall}
    return out


def data_driven(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    m, n, k = 3136, 64, 576
    a, w = rng.random((m, k)) < 0.5, rng.random((k, n)) < 0.5
    out = {}
    for df in ("os", "ws", "is"):
        target = dataclasses.replace(load_target("sparse-mac-32x32"), dataflow=df)
        data_driven_cycles(a[:64, :64], w[:64, :16], target)  # warm
        wall = time_best(lambda t=target: data_driven_cycles(a, w, t), repeats)
        out[df] = {"macs": m * n * k, "wall_s": wall, "macs_per_s": m * n * k / wall}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    table = resnet18_table(np.random.default_rng(0))
    print(json.dumps({"threads": numba.get_num_threads(),
                      "analytical": analytical(table, args.configs, args.repeats),
                      "data_driven_sparse": data_driven(max(1, args.repeats // 2))}, indent=1))


if __name__ == "__main__":
    main()
