"""Seeded generators of hostile input for edgesim's loaders, one family per input kind, and the
runner that classifies what each input did.

Every family is `gen(rng, workdir) -> Callable[[], object]`: it writes or builds one malformed
input from a valid seed (the zoo's digits CNN, a small MLP, the shipped targets and spaces)
with random mutations, and returns the call that feeds it to edgesim's public loader. The
runner sorts the outcome into `ok`, `project_error` (ModelError, TargetError, UserError: the
one-line errors the CLI prints) or `foreign` (anything else: a bug), and times it
(tests/fuzz/runner.py). The ONNX families are in tests/fuzz/onnx_families.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgesim.errors import UserError
from hwmodels.target import shipped_dir
from tests.fuzz.onnx_families import onnx_bytes, onnx_proto
from tests.fuzz.runner import Call, Outcome, run_one

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
