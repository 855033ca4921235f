"""The package boundaries of DESIGN.md, checked on the source: data flows one way.

- `compiler` imports nothing from `hwmodels` or `edgesim` (it knows no target's numbers);
- `hwmodels` imports from `compiler` only `compiler.ir` (the layer description) and
  `compiler.formats` (the format policy, data over the IR);
- the third-party libraries banned in pyproject.toml (ruff's flake8-tidy-imports banned-api:
  onnx, onnxruntime, matplotlib, numba) are imported only in the files its per-file-ignores
  exempt from TID251: that table is the one list, read here, and checked on every import in
  the tree including the lazy ones inside functions;
- the whole tree is ruff clean.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _offenders(package: str, allowed: callable) -> list[str]:
    return [f"{p.relative_to(ROOT)}: {m}" for p in _sources(package)
            for m in sorted(_imports(p)) if not allowed(p, m)]


def _top(module: str) -> str:
    return module.split(".")[0]


def test_compiler_imports_no_hwmodels_or_edgesim() -> None:
    bad = _offenders("compiler", lambda p, m: _top(m) not in ("hwmodels", "edgesim"))
    assert not bad, bad


def test_hwmodels_imports_only_the_ir_from_compiler() -> None:
    # compiler.formats and its byte counts (compiler.format_bytes) are the format policy
    # (plain data over compiler.ir): the cost models read which kernel each layer runs and
    # what it stores from it instead of re-deriving them (issue 12)
    # compiler.numba_cache is numba's njit with the cache stamped by the tree: one stamp for
    # both packages' kernels, which inline each other's helpers
    policy = ("compiler.ir", "compiler.formats", "compiler.format_bytes", "compiler.numba_cache")
    bad = _offenders("hwmodels", lambda p, m: _top(m) != "edgesim"
                     and (_top(m) != "compiler" or m in policy))
    assert not bad, bad


def _lint_conf(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]


def _matches(rel: str, pattern: str) -> bool:
    # ruff matches a per-file-ignores pattern against the path and against the file name
    return fnmatch(rel, pattern) or fnmatch(rel.rsplit("/", 1)[-1], pattern)


# folders ruff leaves out by default (its `exclude`; pyproject adds none): `pip install .`
# writes build/lib, a copy of every package, which ruff never lints either
RUFF_SKIPS = frozenset({"__pypackages__", "_build", "buck-out", "build", "dist", "node_modules",
                        "site-packages", "venv"})


def third_party_offenders(root: Path) -> list[str]:
    """`path: module` for each import of a banned library outside the TID251-exempt files."""
    conf = _lint_conf(root)
    banned = set(conf["flake8-tidy-imports"]["banned-api"])
    homes = [pat for pat, codes in conf["per-file-ignores"].items() if "TID251" in codes]
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")[:-1]
        if (any(p.startswith(".") or p in RUFF_SKIPS for p in parts)
                or any(_matches(rel, h) for h in homes)):
            continue
        bad += [f"{rel}: {m}" for m in sorted(_imports(path)) if _top(m) in banned]
    return bad


def test_the_lint_table_bans_the_heavy_libraries() -> None:
    # the one list is only a list if ruff's banned-api still names them and exempts someone
    conf = _lint_conf(ROOT)
    assert {"onnx", "onnxruntime", "matplotlib", "numba"} <= set(
        conf["flake8-tidy-imports"]["banned-api"])
    assert any("TID251" in codes for codes in conf["per-file-ignores"].values())


def test_third_party_imports_stay_home() -> None:
    bad = third_party_offenders(ROOT)
    assert not bad, bad


def test_a_lazy_import_outside_the_list_is_caught(tmp_path: Path) -> None:
    # a copy of the real pyproject.toml over a tree of three files: the check must name the
    # one outside the list (imported inside a function, as the lazy homes do) and only it
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    lazy = "def run():\n    import onnxruntime\n    return onnxruntime\n"
    for rel, text in {"edgesim/stray.py": lazy, "edgesim/evaluate.py": lazy,
                      "compiler/frontend/sub/reader.py": "from onnx import helper\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert third_party_offenders(tmp_path) == ["edgesim/stray.py: onnxruntime"]


def test_tree_is_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    res = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
