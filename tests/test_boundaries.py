"""The package boundaries of DESIGN.md, checked on the source: data flows one way.

- `compiler` imports nothing from `hwmodels` or `edgesim` (it knows no target's numbers);
- `hwmodels` imports from `compiler` only `compiler.ir` (the layer description) and
  `compiler.formats` (the format policy, data over the IR);
- `onnx` is imported only in compiler/frontend, compiler/emit and edgesim/zoo (and the probe);
- `onnxruntime` only in edgesim/evaluate.py (and the probe); `matplotlib` only in
  edgesim/plot.py;
- the whole tree is ruff clean (ruff's banned-api rules repeat the third-party limits per file).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "hwmodels", "edgesim")


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
    policy = ("compiler.ir", "compiler.formats", "compiler.format_bytes")
    bad = _offenders("hwmodels", lambda p, m: _top(m) != "edgesim"
                     and (_top(m) != "compiler" or m in policy))
    assert not bad, bad


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


# hwmodels/probe.py measures this host's kernels by running onnxruntime on models it builds;
# edgesim/zoo/train_digits.py and train_lm.py are offline training scripts that check their
# exports; edgesim/llm/generate.py runs KV-cache decoders (edgesim generate, perplexity);
# edgesim/kernel_check.py reads the optimised graph onnxruntime runs (issue 12);
# edgesim/batch_check.py runs the emitted file at batch 2.
THIRD_PARTY_HOMES = {
    "onnx": ("compiler/frontend/", "compiler/emit/", "edgesim/zoo/", "hwmodels/probe.py",
             "edgesim/validate.py", "edgesim/kernel_check.py", "edgesim/batch_check.py"),
    "onnxruntime": ("edgesim/evaluate.py", "hwmodels/probe.py", "edgesim/zoo/train_digits.py",
                    "edgesim/zoo/train_lm.py", "edgesim/llm/generate.py",
                    "edgesim/validate.py", "edgesim/kernel_check.py",
                    "edgesim/batch_check.py"),
    "matplotlib": ("edgesim/plot.py",),
}


@pytest.mark.parametrize("library", sorted(THIRD_PARTY_HOMES))
def test_third_party_imports_stay_home(library: str) -> None:
    homes = THIRD_PARTY_HOMES[library]
    bad = [o for pkg in PACKAGES for o in _offenders(
        pkg, lambda p, m: _top(m) != library or _rel(p).startswith(homes))]
    assert not bad, bad


def test_tree_is_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    res = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
