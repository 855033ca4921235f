"""Dense compute cycles of edgesim's MAC-array model against SCALE-Sim, on ResNet-18's convs.

SCALE-Sim (PyPI `scalesim`) runs in its own venv (default /tmp/hw1-venv) as a worker process:
this script re-invokes itself there with `--worker`, and that side imports only SCALE-Sim.
For every unique ResNet-18 conv/fc shape (224x224 input, batch 1), 16x16 and 32x32 arrays and
the os/ws/is dataflows, the worker builds SCALE-Sim's operand matrices and demand matrices
(scalesim.compute.systolic_compute_*) and reports the demand-matrix length -- SCALE-Sim's
compute cycles, before memory stalls. edgesim evaluates the same layers with SRAMs and DRAM
bandwidth large enough that no memory effect shows (SCALE-Sim's compute model has none).

SCALE-Sim has no padding, so each layer's ifmap is given pre-padded; its ofmap size,
ceil((H - F + s) / s), then equals ResNet-18's. Prints JSON.

Usage: python bench/bench_scalesim.py [--scalesim-python /tmp/hw1-venv/bin/python]
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name, padded ifmap H (= W), filter size, in channels, filters, stride, times in ResNet-18
RESNET18 = [
    ("conv1", 229, 7, 3, 64, 2, 1),
    ("layer1.conv", 58, 3, 64, 64, 1, 4),
    ("layer2.0.conv1", 57, 3, 64, 128, 2, 1),
    ("layer2.0.downsample", 55, 1, 64, 128, 2, 1),
    ("layer2.conv", 30, 3, 128, 128, 1, 3),
    ("layer3.0.conv1", 29, 3, 128, 256, 2, 1),
    ("layer3.0.downsample", 27, 1, 128, 256, 2, 1),
    ("layer3.conv", 16, 3, 256, 256, 1, 3),
    ("layer4.0.conv1", 15, 3, 256, 512, 2, 1),
    ("layer4.0.downsample", 13, 1, 256, 512, 2, 1),
    ("layer4.conv", 9, 3, 512, 512, 1, 3),
    ("fc", 1, 1, 512, 1000, 1, 1),
]
ARRAYS = (16, 32)
DATAFLOWS = ("os", "ws", "is")


def gemm_shape(h: int, f: int, c: int, n: int, s: int) -> tuple[int, int, int]:
    """(M ofmap pixels, N filters, K window) with SCALE-Sim's ofmap rule."""
    out = math.ceil((h - f + s) / s)
    return out * out, n, f * f * c


def worker(spec: dict) -> dict:
    """Runs inside SCALE-Sim's venv: compute cycles and wall time per (array, dataflow)."""
    from scalesim.compute.operand_matrix import operand_matrix
    from scalesim.compute.systolic_compute_is import systolic_compute_is
    from scalesim.compute.systolic_compute_os import systolic_compute_os
    from scalesim.compute.systolic_compute_ws import systolic_compute_ws
    from scalesim.scale_config import scale_config
    from scalesim.topology_utils import topologies

    compute = {"os": systolic_compute_os, "ws": systolic_compute_ws, "is": systolic_compute_is}
    topo = topologies()
    topo.load_arrays(spec["topology"])
    out = {}
    for size in spec["arrays"]:
        for df in spec["dataflows"]:
            start, cycles = time.perf_counter(), []
            for layer in range(topo.get_num_layers()):
                config = scale_config()
                config.set_arr_dims(size, size)
                config.set_dataflow(df)
                config.force_valid()
                ops = operand_matrix()
                ops.set_params(config_obj=config, topoutil_obj=topo, layoututil_obj=None,
                               layer_id=layer)
                ops.create_operand_matrices()
                system = compute[df]()
                system.set_params(config_obj=config, ifmap_op_mat=ops.get_ifmap_matrix()[1],
                                  filter_op_mat=ops.get_filter_matrix()[1],
                                  ofmap_op_mat=ops.get_ofmap_matrix()[1])
                cycles.append(int(system.get_demand_matrices()[2].shape[0]))
            out[f"{size}x{size}/{df}"] = {"cycles": cycles, "wall_s": time.perf_counter() - start}
    return out


def write_topology(path: Path) -> None:
    rows = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,"]
    rows += [f"{name},{h},{h},{f},{f},{c},{n},{s}," for name, h, f, c, n, s, _ in RESNET18]
    path.write_text("\n".join(rows) + "\n")


def run_scalesim(python: str, topology: Path) -> dict:
    spec = {"topology": str(topology), "arrays": list(ARRAYS), "dataflows": list(DATAFLOWS)}
    done = subprocess.run([python, __file__, "--worker", json.dumps(spec)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def edgesim_cycles() -> tuple[dict, float]:
    """edgesim's cycles per (array, dataflow) for every layer, timed after a warm call."""
    import dataclasses

    import numpy as np

    from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable
    from hwmodels import configs
    from hwmodels.macarray import evaluate_configs
    from hwmodels.target import load_target

    shapes = [gemm_shape(h, f, c, n, s) for _, h, f, c, n, s, _ in RESNET18]
    m, n, k = (np.array(col, dtype=np.int64) for col in zip(*shapes))
    one = np.ones(len(shapes), dtype=np.int64)
    table = LayerTable(tuple(r[0] for r in RESNET18),
                       np.full(len(shapes), KIND_CODE["conv"], np.int32),
                       np.full(len(shapes), KIND_CATEGORY["conv"], np.int32),
                       m, n, k, one, m * n * k, 0 * one, k * n, m * k, m * n, 4 * m * k,
                       4 * m * n, 4 * k * n, np.ones(len(shapes)), np.ones(len(shapes)))
    base = dataclasses.replace(load_target("systolic-16x16"), ifmap_sram_kib=1e9,
                               filter_sram_kib=1e9, ofmap_sram_kib=1e9,
                               dram_bandwidth_gbps=1e12)
    grid = configs.grid(base, rows=list(ARRAYS), dataflow=list(DATAFLOWS))
    grid = [dataclasses.replace(t, cols=t.rows) for t in grid]
    cfg, bits = configs.from_targets(grid), np.array([[8, 8]])
    evaluate_configs(table, bits, cfg)  # warm: numba compile/cache load stays out of timing
    start = time.perf_counter()
    cost = evaluate_configs(table, bits, cfg)
    wall = time.perf_counter() - start
    keys = [f"{t.rows}x{t.cols}/{t.dataflow}" for t in grid]
    return {key: cost.cycles[h, :, 0].tolist() for h, key in enumerate(keys)}, wall


def compare(ours: dict, theirs: dict) -> dict:
    report = {}
    for key, run in theirs.items():
        rows = []
        for (name, *_), mine, ref in zip(RESNET18, ours[key], run["cycles"]):
            rows.append({"layer": name, "edgesim": mine, "scalesim": ref,
                         "diff_pct": 100.0 * (mine - ref) / ref})
        report[key] = {"max_abs_diff_pct": max(abs(r["diff_pct"]) for r in rows),
                       "scalesim_wall_s": run["wall_s"], "layers": rows}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scalesim-python", default="/tmp/hw1-venv/bin/python")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        topology = Path(tmp) / "resnet18.csv"
        write_topology(topology)
        theirs = run_scalesim(args.scalesim_python, topology)
    ours, edgesim_wall = edgesim_cycles()
    report = compare(ours, theirs)
    scalesim_wall = sum(r["scalesim_wall_s"] for r in report.values())
    print(json.dumps({
        "layers": len(RESNET18), "configs": list(report),
        "max_abs_diff_pct": max(r["max_abs_diff_pct"] for r in report.values()),
        "edgesim_wall_s": edgesim_wall, "scalesim_wall_s": scalesim_wall,
        "wall_time_ratio_scalesim_over_edgesim": scalesim_wall / edgesim_wall,
        "per_config": report}, indent=1))


if __name__ == "__main__":
    main()
