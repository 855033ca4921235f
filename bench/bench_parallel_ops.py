"""Which onnxruntime nodes run a parallel section at several threads, and does the cost model
split them too? Prints JSON.

For each model and precision the model is emitted as `edgesim validate` emits it and run in a
profiled onnxruntime session at `--threads` threads; a node ran a parallel section when its
kernel event's thread statistics list a block (`main_thread.block_size`). That flag is
onnxruntime's own record, not a timing, so it holds on a loaded machine. Per op type: nodes,
and nodes with a parallel section. The model's side, for every group of layers (as
`edgesim validate` groups them) that one node runs alone, so the pair is unambiguous: the
group "splits" when its predicted time at `--threads` is below SPLIT_RATIO of one
thread's; `disagree` counts the groups where onnxruntime and the model differ, by op type,
with examples. "model no faster" is either the model keeping the group on one thread or
a roof that does not grow with threads (a shared cache level's bandwidth, the DRAM roof):
a group onnxruntime splits whose time the model does not shrink is where its multi-thread
predictions can be too slow; "model faster" where onnxruntime stays on one thread, too fast.

Usage: python bench/bench_parallel_ops.py [--models a,b] [--bits fp32,8,4] [--threads 2]
       [--host host.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim import profile_runs  # noqa: E402
from edgesim.node_map import assign_nodes, layer_groups  # noqa: E402
from edgesim.validate import profiled_session  # noqa: E402

MODELS = ("digits_cnn", "digits_transformer", "mobilenet_v2", "resnet18", "resnet50",
          "vit_tiny", "minilm", "llama")
SPLIT_RATIO = 0.95  # a layer the model predicts >= 5 % faster at t threads "splits"
RUNS = 2  # the first run prepacks; the flag is the same in every run after it


def _profile(g: Any, bits: str, threads: int) -> tuple[dict[str, bool], list[tuple], dict]:
    """(parallel flag per node, the optimised graph's (name, inputs, outputs), op types)."""
    import onnx

    from edgesim import calibration as cal
    from edgesim.quantize import quantize_model

    feeds = next(cal.batches(g, cal.random_samples(g, 1)))
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        work = Path(tmp)
        path = Path(quantize_model(g, bits, calib_random=8, out=work / "m.onnx").out)
        sess = profiled_session(path, threads, work)
        for _ in range(RUNS):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
        model = onnx.load(str(work / "optimised.onnx"), load_external_data=False)
    nodes = [(n.name, list(n.input), list(n.output)) for n in model.graph.node]
    return profile_runs.parallel_nodes(events), nodes, {n.name: n.op_type for n in model.graph.node}


def _group_splits(g: Any, bits: str, threads: int, host: Any, group: list[int]
                  ) -> dict[int, bool]:
    """Per group (`edgesim.validate.layer_groups`: a layer onnxruntime ran with the layers
    it fused): is the group's predicted time at `threads` below SPLIT_RATIO of one thread's?"""
    from edgesim import assignment
    from edgesim.simulation import simulate_graph

    a = assignment.resolve(g, bits)
    one, many = (simulate_graph(g, host, a, threads=t).layers for t in (1, threads))
    ms: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for i, (o, m) in enumerate(zip(one, many, strict=True)):
        ms[group[i]][0] += o.latency_ms
        ms[group[i]][1] += m.latency_ms
    return {k: m < SPLIT_RATIO * o for k, (o, m) in ms.items()}


def case(model: str, bits: str, threads: int, host: Any) -> dict[str, Any]:
    """Per op type: nodes, nodes with a parallel section, and layers run by one node alone
    where onnxruntime and the model disagree."""
    from edgesim.loading import load_graph

    g = load_graph(f"zoo:{model}")
    par, nodes, types = _profile(g, bits, threads)
    layer_of = assign_nodes(nodes, g)
    group = layer_groups(g, set(layer_of.values()))
    splits = _group_splits(g, bits, threads, host, group)
    alone = Counter(group[i] for i in layer_of.values())
    ops: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    disagree: dict[str, list[str]] = defaultdict(list)
    for name, flag in par.items():
        op = types.get(name, "?")
        ops[op][0] += 1
        ops[op][1] += flag
        i = layer_of.get(name)
        if i is not None and alone[group[i]] == 1 and splits[group[i]] != flag:
            side = "onnxruntime parallel, model no faster" if flag else \
                "onnxruntime one thread, model faster"
            disagree[f"{op}: {side}"].append(g.layers[i].name)
    return {"ops": {op: {"nodes": n, "parallel": k} for op, (n, k) in sorted(ops.items())},
            "disagree": {k: {"layers": len(v), "examples": v[:3]}
                         for k, v in sorted(disagree.items())}}


def main() -> None:
    from hwmodels.probe import probe_host
    from hwmodels.target import load_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--bits", default="fp32,8,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--host", help="host target YAML (default: probe now)")
    args = ap.parse_args()
    host = load_target(args.host) if args.host else probe_host()
    out = {f"{m}|{b}": case(m, b, args.threads, host) for m in args.models.split(",")
           for b in args.bits.split(",")}
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in out.values():
        for op, v in c["ops"].items():
            total[op][0] += v["nodes"]
            total[op][1] += v["parallel"]
    print(json.dumps({"threads": args.threads, "host": host.description,
                      "load_avg": os.getloadavg(),
                      "ops": {op: {"nodes": n, "parallel": k}
                              for op, (n, k) in sorted(total.items())},
                      "cases": out}, indent=1))


if __name__ == "__main__":
    main()
