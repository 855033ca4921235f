"""`edgesim.api` is the top of the product layer: no module below it imports it back, not even
lazily inside a function (issue 19: pipeline, quantize and sweep did, making a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABOVE_API = {"edgesim/api.py", "edgesim/cli.py", "edgesim/__main__.py", "edgesim/__init__.py",
             *(f"edgesim/commands/{m}.py" for m in ("models", "compile", "hardware"))}


def _imports_api(tree: ast.AST) -> list[int]:
    """Line numbers of every `import edgesim.api`, `from edgesim.api import ...` and
    `from edgesim import api`, at any depth."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
                a.name == "edgesim.api" or a.name.startswith("edgesim.api.")
                for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module == "edgesim.api"
                or (node.module == "edgesim" and any(a.name == "api" for a in node.names))):
            lines.append(node.lineno)
    return lines


def offenders(root: Path) -> list[str]:
    """`file:line` of each import of edgesim.api outside the modules above it."""
    found = []
    for f in sorted((root / "edgesim").rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if rel not in ABOVE_API:
            found += [f"{rel}:{n}" for n in _imports_api(ast.parse(f.read_text()))]
    return found


def test_no_module_below_the_api_imports_it():
    assert offenders(ROOT) == []


def test_the_walk_finds_a_lazy_import_of_the_api(tmp_path):
    pkg = tmp_path / "edgesim" / "sweep"
    pkg.mkdir(parents=True)
    (pkg / "run.py").write_text("def f():\n    from edgesim.api import load_graph\n")
    (tmp_path / "edgesim" / "pipeline.py").write_text("import os\nfrom edgesim import api\n")
    (tmp_path / "edgesim" / "cli.py").write_text("from edgesim import api\n")
    assert offenders(tmp_path) == ["edgesim/pipeline.py:2", "edgesim/sweep/run.py:2"]
