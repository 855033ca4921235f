"""Seeded generators of hostile input for edgesim's loaders, one family per input kind, and the
runner that classifies what each input did.

Every family is `gen(rng, workdir) -> Callable[[], object]`: it writes or builds one malformed
input from a valid seed (the zoo's digits CNN, a small MLP, the shipped targets and spaces)
with random mutations, and returns the call that feeds it to edgesim's public loader. The
runner sorts the outcome into `ok`, `project_error` (ModelError, TargetError, UserError: the
one-line errors the CLI prints) or `foreign` (anything else: a bug), and times it.
"""

from __future__ import annotations

import json
import random
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from edgesim.errors import UserError
from hwmodels.target import TargetError, shipped_dir

PROJECT_ERRORS = (ModelError, TargetError, UserError)
HUGE = (2**31 - 1, 2**40, 2**62, 2**63 - 1)
Call = Callable[[], object]


@dataclass(frozen=True)
class Outcome:
    """What one input did: `kind` is ok / project_error / foreign / slow."""

    family: str
    kind: str
    seconds: float
    detail: str = ""


class _Slow(BaseException):
    """Raised by the alarm of `run_one` (a BaseException: no `except Exception` swallows it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Slow


def run_one(family: str, call: Call, limit_s: float) -> Outcome:
    """Run `call`, classify its outcome; stop it after `limit_s` (SIGALRM) as `slow`."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    start = time.perf_counter()
    try:
        call()
        kind, detail = "ok", ""
    except _Slow:
        kind, detail = "slow", ""
    except PROJECT_ERRORS as e:
        kind, detail = "project_error", str(e)[:200]
    except Exception as e:  # noqa: BLE001 - the point: anything else is a bug
        tb = traceback.extract_tb(e.__traceback__)[-1]
        kind, detail = "foreign", f"{type(e).__name__}: {str(e)[:160]} @ {tb.filename}:{tb.lineno}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - start
    # over the limit is slow whatever came out (code that swallowed the alarm included)
    return Outcome(family, "slow" if seconds > limit_s else kind, seconds, detail)


# ---- ONNX models ----

@cache
def _seed_models() -> tuple[bytes, ...]:
    from edgesim import zoo

    return (zoo.build("digits_cnn").SerializeToString(), _mlp().SerializeToString())


def _mlp() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["y"], name="relu")]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _load_and_simulate(path: Path) -> Call:
    def call() -> object:
        from edgesim import api

        return api.simulate(str(path), "rpi5", bits=8)
    return call


def onnx_bytes(rng: random.Random, work: Path) -> Call:
    """Byte-level mutations of a valid model: flips, truncation, insertions, splices."""
    data = bytearray(rng.choice(_seed_models()))
    for _ in range(rng.randint(1, 8)):
        op, i = rng.randrange(4), rng.randrange(len(data) + 1)
        if op == 0 and i < len(data):
            data[i] = rng.randrange(256)
        elif op == 1:
            del data[i:i + rng.randint(1, 64)]
        elif op == 2:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            data = data[:i]
    path = work / "m.onnx"
    path.write_bytes(bytes(data))
    return _load_and_simulate(path)


def _mutate_dims(m: onnx.ModelProto, rng: random.Random) -> None:
    vis = list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info)
    vi = rng.choice(vis)
    dims = vi.type.tensor_type.shape.dim
    if dims:
        d = rng.choice(dims)
        choice = rng.choice([0, -1, -7, *HUGE, "sym", "clear"])
        if choice == "sym":
            d.dim_param = rng.choice(["N", "", "?", "x" * 300])
        elif choice == "clear":
            del dims[rng.randrange(len(dims))]
        else:
            d.dim_value = choice


def _mutate_init(m: onnx.ModelProto, rng: random.Random) -> None:
    if not m.graph.initializer:
        return
    t = rng.choice(m.graph.initializer)
    op = rng.randrange(5)
    if op == 0:
        t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 3, *HUGE]) if t.dims else 0
    elif op == 1:
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data) + 1)]
    elif op == 2:
        t.data_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 22, 40])
    elif op == 3:
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        t.external_data.add(key="location", value=rng.choice(
            ["../../etc/passwd", "/etc/hostname", "w.bin", "", "a\x00b"]))
        t.external_data.add(key="length", value=str(rng.choice([0, 10, *HUGE])))
    else:
        t.dims.extend([rng.choice([2, *HUGE])])


def _mutate_node(m: onnx.ModelProto, rng: random.Random) -> None:
    nodes = m.graph.node
    if not nodes:
        return
    n = rng.choice(nodes)
    op = rng.randrange(6)
    if op == 0:
        n.op_type = rng.choice(["Conv", "Gemm", "MatMul", "Reshape", "Softmax", "Nope",
                                "Loop", "If", "Gather", "Resize", "Concat", "Identity"])
    elif op == 1 and n.input:
        n.input[rng.randrange(len(n.input))] = rng.choice(["", "missing", n.output[0]])
    elif op == 2:
        del nodes[rng.randrange(len(nodes))]
    elif op == 3 and n.attribute:
        a = rng.choice(n.attribute)
        if a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice([0, -1, -5, *HUGE])
        elif a.type == onnx.AttributeProto.INT:
            a.i = rng.choice([0, -1, *HUGE])
    elif op == 4:
        nodes.append(onnx.NodeProto.FromString(n.SerializeToString()))  # duplicate outputs
    else:
        n.domain = rng.choice(["", "com.microsoft", "ai.onnx.ml", "bogus"])


def _mutate_model(m: onnx.ModelProto, rng: random.Random) -> None:
    op = rng.randrange(4)
    if op == 0:
        m.opset_import[0].version = rng.choice([1, 6, 11, 13, 17, 21, 23, 99, 0, -1])
    elif op == 1:
        m.ir_version = rng.choice([0, 1, 3, 8, 10, 99])
    elif op == 2 and m.graph.output:
        del m.graph.output[:]
    else:
        m.graph.input[0].type.tensor_type.elem_type = rng.choice([0, 1, 6, 7, 10, 11, 9, 16])


def onnx_proto(rng: random.Random, work: Path) -> Call:
    """Structural mutations of a valid model's protobuf: dims, initializers, nodes, opsets."""
    m = onnx.ModelProto.FromString(rng.choice(_seed_models()))
    mutators = (_mutate_dims, _mutate_init, _mutate_node, _mutate_model)
    for _ in range(rng.randint(1, 3)):
        rng.choice(mutators)(m, rng)
    path = work / "m.onnx"
    path.write_bytes(m.SerializeToString())
    return _load_and_simulate(path)


# ---- YAML: targets and sweep spaces ----

YAML_VALUES = ("-1", "0", "1e308", "1e999", ".nan", ".inf", "-.inf", "null", "''", "[]", "{}",
               "[1, 2, 3]", "{a: 1}", "true", "abc", "99999999999999999999999", "0x10",
               "!!binary aGVsbG8=", "&a [*a]", "2.5", "1000000000")


def _alias_bomb(depth: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


def _mutate_yaml(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.randrange(6)
        if op == 0 and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {rng.choice(YAML_VALUES)}"
        elif op == 1:
            del lines[i]
        elif op == 2:
            lines.insert(i, f"{rng.choice(['unknown', 'kind', 'name', 'base'])}: "
                            f"{rng.choice(YAML_VALUES)}")
        elif op == 3:
            lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)]
        elif op == 4:
            return _alias_bomb(rng.randint(3, 9))
        else:
            return "[" * rng.randint(50, 5000) + "]" * rng.randint(0, 10)
    return "\n".join(lines) + "\n"


def target_yaml(rng: random.Random, work: Path) -> Call:
    """Mutated shipped target files: wrong types, extreme numbers, aliases, deep nesting."""
    from hwmodels.target import list_targets, load_target

    src = shipped_dir() / f"{rng.choice(list_targets())}.yaml"
    path = work / "t.yaml"
    path.write_text(_mutate_yaml(src.read_text(), rng))

    def call() -> object:
        from edgesim import api

        t = load_target(str(path))
        return api.simulate("zoo:digits_cnn", t, bits=rng.choice(["fp32", 8, 4]))
    return call


SPACE = """name: fuzz
base: systolic-16x16
parameters:
  rows: {range: [8, 32], num: 3, scale: log}
  cols: [8, 16]
  dataflow: [os, ws]
  clock_ghz: {uniform: [0.2, 1.2]}
search: {method: grid, samples: 4, seed: 0}
models: [zoo:digits_cnn]
"""


def sweep_space(rng: random.Random, work: Path) -> Call:
    """Mutated sweep spaces (incl. huge ranges and sample counts); parsed and enumerated."""
    from edgesim.sweep import enumerate_points, load_space

    base = rng.choice([SPACE, SPACE.replace("grid", rng.choice(["random", "lhs"]))])
    text = _mutate_yaml(base, rng) if rng.random() < 0.7 else base.replace(
        rng.choice(["num: 3", "samples: 4", "[8, 32]", "[8, 16]"]),
        rng.choice(["num: 100000000", "samples: 1000000000", "[1, 1e300]", "[0, -5]",
                    "num: 0", "samples: -1", "[8, 16, 32, 64, 128, 256, 512]"]))
    path = work / "s.yaml"
    path.write_text(text)
    return lambda: enumerate_points(load_space(path))


# ---- calibration data and assignment files ----

@cache
def _digits_graph() -> Any:
    from edgesim import api

    return api.load_graph("zoo:digits_cnn")


def _odd_array(rng: random.Random, shape: tuple[int, ...]) -> np.ndarray:
    op = rng.randrange(7)
    if op == 0:
        return np.full(shape, rng.choice([np.nan, np.inf, -np.inf, 0.0, 1e38]), np.float32)
    if op == 1:
        return np.zeros((0, *shape[1:]), np.float32)
    if op == 2:
        return np.ones(tuple(max(1, d + rng.choice([-1, 1])) for d in shape), np.float32)
    if op == 3:
        return np.ones(shape, rng.choice([np.int8, np.float64, np.bool_, np.complex64]))
    if op == 4:
        return np.array(["a", "b"])
    if op == 5:
        return np.ones(shape[:rng.randrange(len(shape))], np.float32)
    return np.random.default_rng(rng.randrange(2**32)).standard_normal(shape).astype(np.float32)


def calib_npz(rng: random.Random, work: Path) -> Call:
    """Calibration .npz files with odd shapes, dtypes, values, names and labels; read,
    validated and turned into activation statistics on the digits CNN."""
    from edgesim import calibration as cal

    g = _digits_graph()
    n = rng.choice([1, 2, 5])
    arrays = {}
    if rng.random() < 0.9:
        arrays[rng.choice(["input", "input", "x", ""])] = _odd_array(rng, (n, 1, 8, 8))
    if rng.random() < 0.5:
        arrays["labels"] = rng.choice([np.arange(n), np.arange(n + 1), np.full(n, -3),
                                       np.full(n, 10**12), np.ones(n) * 0.5, np.array("x")])
    path = work / "c.npz"
    if rng.random() < 0.1:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
    else:
        np.savez(path, **arrays)

    def call() -> object:
        from compiler.passes.calibrate import calibrate

        data, _ = cal.read_labelled(g, path)
        return calibrate(g, cal.batches(g, data))
    return call


def assignment_file(rng: random.Random, work: Path) -> Call:
    """Bit-assignment JSON files: wrong layers, widths, types, shapes; then simulated."""
    g = _digits_graph()
    names = [layer.name for layer in g.layers]
    value = rng.choice([
        {rng.choice(names): rng.choice([8, 4, 0, -1, 3, 33, 2**40, "8", None, [8], [8, 8, 8],
                                        [4, 32], 8.5, True])},
        {n: rng.choice([2, 4, 8, 16, 32]) for n in names},
        {"nope": 8}, [], "8", 8, None, {}, {n: [8, 8] for n in names[:2]},
    ])
    path = work / "a.json"
    text = json.dumps(value)
    path.write_text(text if rng.random() < 0.9 else text[:rng.randrange(len(text) + 1)])

    def call() -> object:
        from edgesim import api

        return api.simulate(g, rng.choice(["rpi5", "cortex-m7", "systolic-16x16"]),
                            bits=str(path))
    return call


FLAG_VALUES = ("", "-1", "0", "1", "8", "4", "fp32", "abc", "1e400", "nan", "99999999999",
               "zoo:digits_cnn", "zoo:nope", "rpi5", "cortex-m7", "x=1x1x8x8", "input=0x1",
               "input=-1x1x8x8", "size=1kB", "bits=4", "latency=0ms", "=", "a.onnx", "/",
               "\x00", "macarray", "--", "-o")
COMMANDS = {
    "inspect": ["zoo:digits_cnn", "--input-shape"],
    "simulate": ["zoo:digits_cnn", "--target", "--bits", "--threads", "--runtime",
                 "--input-shape"],
    "targets": [],
    "pareto": ["--x", "--y", "--objectives", "--color", "-o"],
    "evaluate": ["--data", "--threads", "--runs"],
    "quantize": ["zoo:digits_cnn", "--bits", "--calib", "-o"],
}


class CliExit(Exception):
    """The CLI returned 1 (an internal error): a bug, as the runner must count it."""


def cli_flags(rng: random.Random, work: Path) -> Call:
    """Random command lines of the cheap commands through `edgesim.cli.main` (stdout and
    stderr swallowed): exit 1 is an internal error; argparse's usage errors (exit 2) and the
    one-line errors are the project's."""
    import contextlib
    import io

    from edgesim import cli

    command = rng.choice(list(COMMANDS))
    argv = [command]
    for _ in range(rng.randint(0, 5)):
        flag = rng.choice(COMMANDS[command] or ["--json"])
        argv += [flag] + ([rng.choice(FLAG_VALUES)] if flag.startswith("-") else [])
    argv += rng.sample(["--json", "-q", "-v"], rng.randint(0, 2))
    argv = [a.replace("a.onnx", str(work / "a.onnx")) for a in argv]
    for i in range(1, len(argv)):  # every output lands in the work folder
        if argv[i - 1] == "-o":
            argv[i] = str(work / f"out{rng.randrange(3)}.png")

    def call() -> object:
        # relative paths in the flags resolve in the work folder too, never the caller's
        with contextlib.chdir(work), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as e:  # argparse: --help exits 0, a usage error 2
                code = e.code
        if code == 1:
            raise CliExit(" ".join(argv))
        if code == 2:
            raise UserError("cli", " ".join(argv))
        return code
    return call


FAMILIES: dict[str, Callable[[random.Random, Path], Call]] = {
    "onnx_bytes": onnx_bytes, "onnx_proto": onnx_proto, "target_yaml": target_yaml,
    "sweep_space": sweep_space, "calib_npz": calib_npz, "assignment": assignment_file,
    "cli_flags": cli_flags,
}


def fuzz(family: str, seed: int, count: int, work: Path, limit_s: float = 10.0
         ) -> list[Outcome]:
    """`count` inputs of `family` from `seed`; the generator's own failures count too."""
    rng = random.Random(f"{family}:{seed}")
    out = []
    for _ in range(count):
        call = FAMILIES[family](rng, work)
        out.append(run_one(family, call, limit_s))
    return out
