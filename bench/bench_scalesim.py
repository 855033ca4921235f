"""edgesim's MAC-array models against SCALE-Sim 3.0, per layer, on ResNet-18's convs.

Two edgesim models are compared, each named in the output:
- "edgesim": edgesim's own model (`hwmodels.macarray`) at SCALE-Sim's SRAM sizes, DRAM
  bandwidth unbounded (compute cycles only). It splits the ws/is stream into chunks when the
  partial sums overflow the ofmap SRAM and pays a stationary preload per chunk.
- "scalesim_mode": the SCALE-Sim-compatible mode (`hwmodels.scalesim`), which keeps partial
  sums as SCALE-Sim does (no chunking) and reports SRAM requests and DRAM words per operand.

SCALE-Sim (PyPI `scalesim`) runs in its own venv (default /tmp/hw1-venv) as a worker process:
this script re-invokes itself there with `--worker`, and that side imports only SCALE-Sim.
For every unique ResNet-18 conv/fc shape (224x224 input, batch 1), 16x16 and 32x32 arrays and
the os/ws/is dataflows, the worker builds SCALE-Sim's operand and demand matrices
(scalesim.compute.systolic_compute_*): the demand-matrix length is SCALE-Sim's compute cycles
(before memory stalls) and its request counters are its SRAM reads/writes. SCALE-Sim's DRAM
counts need its cycle-by-cycle memory simulation, which takes minutes per layer in Python, so
it runs only on the layers named by --dram-layers (default: the small late layers) at
SCALE-Sim's default SRAM sizes (256/256/128 kB) in its estimate-bandwidth mode.

SCALE-Sim has no padding, so each layer's ifmap is given pre-padded; its ofmap size,
ceil((H - F + s) / s), then equals ResNet-18's. Prints JSON.

Usage: python bench/bench_scalesim.py [--scalesim-python /tmp/hw1-venv/bin/python]
    [--dram-layers fc,layer4.conv]
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


def _scalesim_layer(topo, size: int, df: str, layer: int, memory: bool) -> dict:
    """One layer in SCALE-Sim: compute cycles and SRAM requests, and DRAM words if `memory`."""
    from scalesim.compute.operand_matrix import operand_matrix
    from scalesim.compute.systolic_compute_is import systolic_compute_is
    from scalesim.compute.systolic_compute_os import systolic_compute_os
    from scalesim.compute.systolic_compute_ws import systolic_compute_ws
    from scalesim.scale_config import scale_config
    from scalesim.single_layer_sim import single_layer_sim

    compute = {"os": systolic_compute_os, "ws": systolic_compute_ws, "is": systolic_compute_is}
    config = scale_config()
    config.set_arr_dims(size, size)
    config.set_dataflow(df)
    config.force_valid()
    ops = operand_matrix()
    ops.set_params(config_obj=config, topoutil_obj=topo, layoututil_obj=None, layer_id=layer)
    ops.create_operand_matrices()
    system = compute[df]()
    system.set_params(config_obj=config, ifmap_op_mat=ops.get_ifmap_matrix()[1],
                      filter_op_mat=ops.get_filter_matrix()[1],
                      ofmap_op_mat=ops.get_ofmap_matrix()[1])
    row = {"cycles": int(system.get_demand_matrices()[2].shape[0]),
           "sram_ifmap_reads": int(system.get_ifmap_requests()),
           "sram_filter_reads": int(system.get_filter_requests()),
           "sram_ofmap_writes": int(system.get_ofmap_requests()),
           "sram_kb": list(config.get_mem_sizes())}
    if memory:
        sim = single_layer_sim()
        sim.set_params(layer_id=layer, config_obj=config, topology_obj=topo, verbose=False)
        sim.run()
        items = sim.get_detail_report_items()
        row.update(dram_ifmap_reads=int(items[11]), dram_filter_reads=int(items[14]),
                   dram_ofmap_writes=int(items[17]), total_cycles_with_stalls=int(
                       sim.total_cycles))
    return row


def worker(spec: dict) -> dict:
    """Runs inside SCALE-Sim's venv: per (array, dataflow), each layer's counts and the wall
    time of the compute part."""
    import contextlib
    import io

    from scalesim.topology_utils import topologies

    topo = topologies()
    topo.load_arrays(spec["topology"])
    out = {}
    for size in spec["arrays"]:
        for df in spec["dataflows"]:
            start, rows = time.perf_counter(), []
            for layer in range(topo.get_num_layers()):
                with contextlib.redirect_stdout(io.StringIO()):  # SCALE-Sim prints
                    rows.append(_scalesim_layer(topo, size, df, layer,
                                                layer in spec["memory_layers"]))
            out[f"{size}x{size}/{df}"] = {"layers": rows, "wall_s": time.perf_counter() - start}
    return out


def write_topology(path: Path) -> None:
    rows = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,"]
    rows += [f"{name},{h},{h},{f},{f},{c},{n},{s}," for name, h, f, c, n, s, _ in RESNET18]
    path.write_text("\n".join(rows) + "\n")


def run_scalesim(python: str, topology: Path, memory_layers: list[int]) -> dict:
    spec = {"topology": str(topology), "arrays": list(ARRAYS), "dataflows": list(DATAFLOWS),
            "memory_layers": memory_layers}
    done = subprocess.run([python, __file__, "--worker", json.dumps(spec)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def layer_table():
    """The RESNET18 shapes as an edgesim LayerTable (one GEMM per row; 1-byte words)."""
    import numpy as np

    from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable

    shapes = [gemm_shape(h, f, c, n, s) for _, h, f, c, n, s, _ in RESNET18]
    m, n, k = (np.array(col, dtype=np.int64) for col in zip(*shapes))
    ifmap = np.array([h * h * c for _, h, _, c, *_ in RESNET18], dtype=np.int64)
    one = np.ones(len(shapes), dtype=np.int64)
    return LayerTable(tuple(r[0] for r in RESNET18),
                      np.full(len(shapes), KIND_CODE["conv"], np.int32),
                      np.full(len(shapes), KIND_CATEGORY["conv"], np.int32),
                      m, n, k, one, m * n * k, 0 * one, k * n, ifmap, m * n, 4 * ifmap,
                      4 * m * n, 4 * k * n, np.ones(len(shapes)), np.ones(len(shapes)))


def edgesim_models(sram_kb: tuple[float, float, float]) -> tuple[dict, dict, float]:
    """Per (array, dataflow): edgesim's own cycles at `sram_kb`, and the SCALE-Sim-compatible
    mode's counts; plus the own model's wall time after a warm call."""
    import dataclasses

    import numpy as np

    from hwmodels import configs, scalesim
    from hwmodels.macarray import evaluate_configs
    from hwmodels.target import load_target

    table = layer_table()
    base = dataclasses.replace(load_target("systolic-16x16"), ifmap_sram_kib=sram_kb[0],
                               filter_sram_kib=sram_kb[1], ofmap_sram_kib=sram_kb[2],
                               dram_bandwidth_gbps=1e12)
    grid = configs.grid(base, rows=list(ARRAYS), dataflow=list(DATAFLOWS))
    grid = [dataclasses.replace(t, cols=t.rows) for t in grid]
    cfg, bits = configs.from_targets(grid), np.array([[8, 8]])
    evaluate_configs(table, bits, cfg)  # warm: numba compile/cache load stays out of timing
    start = time.perf_counter()
    cost = evaluate_configs(table, bits, cfg)
    wall = time.perf_counter() - start
    keys = [f"{t.rows}x{t.cols}/{t.dataflow}" for t in grid]
    own = {key: cost.cycles[h, :, 0].tolist() for h, key in enumerate(keys)}
    mode = {f"{t.rows}x{t.cols}/{t.dataflow}": scalesim.counts(
        table, t.dataflow, t.rows, t.cols, sram_kb).rows() for t in grid}
    return own, mode, wall


COUNTS = ("sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes", "dram_ifmap_reads",
          "dram_filter_reads", "dram_ofmap_writes")


def _pct(mine: float, ref: float) -> float:
    return 100.0 * (mine - ref) / ref if ref else (0.0 if mine == ref else math.inf)


def _row(name: str, own: float, mode: dict, ref: dict) -> dict:
    row = {"layer": name, "scalesim_cycles": ref["cycles"],
           "scalesim_mode_cycles": mode["compute_cycles"], "edgesim_cycles": own,
           "scalesim_mode_diff_pct": _pct(mode["compute_cycles"], ref["cycles"]),
           "edgesim_diff_pct": _pct(own, ref["cycles"])}
    for f in COUNTS:
        if f in ref:
            row[f] = {"scalesim": ref[f], "scalesim_mode": mode[f],
                      "diff_pct": _pct(mode[f], ref[f])}
    return row


def compare(own: dict, mode: dict, theirs: dict) -> dict:
    report = {}
    for key, run in theirs.items():
        rows = [_row(name, o, m, r) for (name, *_), o, m, r
                in zip(RESNET18, own[key], mode[key], run["layers"])]
        worst = {f: max((abs(r[f]["diff_pct"]) for r in rows if f in r), default=None)
                 for f in COUNTS}
        report[key] = {
            "scalesim_mode_max_abs_diff_pct": max(abs(r["scalesim_mode_diff_pct"])
                                                  for r in rows),
            "edgesim_max_abs_diff_pct": max(abs(r["edgesim_diff_pct"]) for r in rows),
            "scalesim_mode_total_diff_pct": _pct(sum(r["scalesim_mode_cycles"] for r in rows),
                                                 sum(r["scalesim_cycles"] for r in rows)),
            "edgesim_total_diff_pct": _pct(sum(r["edgesim_cycles"] for r in rows),
                                           sum(r["scalesim_cycles"] for r in rows)),
            "counts_max_abs_diff_pct": worst, "scalesim_wall_s": run["wall_s"],
            "layers": rows}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scalesim-python", default="/tmp/hw1-venv/bin/python")
    parser.add_argument("--dram-layers", default="layer4.0.downsample,fc",
                        help="layers to run SCALE-Sim's memory simulation on ('' for none)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    names = [r[0] for r in RESNET18]
    memory = [names.index(n) for n in args.dram_layers.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        topology = Path(tmp) / "resnet18.csv"
        write_topology(topology)
        theirs = run_scalesim(args.scalesim_python, topology, memory)
    sram_kb = tuple(next(iter(theirs.values()))["layers"][0]["sram_kb"])
    own, mode, edgesim_wall = edgesim_models(sram_kb)
    report = compare(own, mode, theirs)
    scalesim_wall = sum(r["scalesim_wall_s"] for r in report.values())
    print(json.dumps({
        "layers": len(RESNET18), "configs": list(report), "sram_kb": sram_kb,
        "models": {"edgesim": "edgesim's own MAC-array model (chunks ws/is partial sums)",
                   "scalesim_mode": "hwmodels.scalesim, SCALE-Sim-3 compatible"},
        "scalesim_mode_max_abs_diff_pct": max(r["scalesim_mode_max_abs_diff_pct"]
                                              for r in report.values()),
        "edgesim_max_abs_diff_pct": max(r["edgesim_max_abs_diff_pct"]
                                        for r in report.values()),
        "edgesim_wall_s": edgesim_wall, "scalesim_wall_s": scalesim_wall,
        "per_config": report}, indent=1))


if __name__ == "__main__":
    main()
