"""Which test files need onnxruntime, from their imports: `tests/conftest.py` gives them the
`ort` marker, so `pytest -m "not ort"` runs without onnxruntime and no file has to remember it.

A module "uses onnxruntime" if it imports it anywhere (module level or inside a function).
A test file needs onnxruntime if any import of it, at any level, reaches such a module through
module-level imports of repository modules. Lazy imports inside library functions are not
followed (`edgesim.api` would otherwise drag every test in): a test that reaches onnxruntime
only that way (e.g. through `api.compile`'s evaluation) keeps its own `pytestmark`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("compiler", "hwmodels", "edgesim", "tests")


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of a file under `root` (a package's `__init__.py` -> the package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module_level: bool) -> frozenset[str]:
    """Absolute imports of the file (only its top-level statements if `module_level`);
    `from a import b` yields both `a` and `a.b`."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return frozenset(names)


def ort_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> frozenset[str]:
    """Modules under `root` that use onnxruntime or reach a user as described above."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    every = {m: imported(p, module_level=False) for m, p in files.items()}
    edges = {m: every[m] if _is_test(m) else imported(p, module_level=True)
             for m, p in files.items()}
    hit = {m for m, names in every.items() if any(n.split(".")[0] == "onnxruntime"
                                                   for n in names)}
    while new := {m for m, names in edges.items() if m not in hit and names & hit}:
        hit |= new
    return frozenset(hit)


def _is_test(module: str) -> bool:
    return module.split(".")[0] == "tests"
