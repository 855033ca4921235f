"""The project's mypy configuration (pyproject.toml [tool.mypy]) is the one that runs, strict on
compiler/ and hwmodels/, non-strict on edgesim/ (issue 19).

Probe modules live in throw-away packages named like the project's and are checked, in one
mypy run, with the repository's config file: a plain type error is reported in every package;
a function without annotations (`disallow_untyped_defs`, one of --strict's flags) only in
compiler/ and hwmodels/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
PACKAGES = ("compiler", "hwmodels", "edgesim")
PROBES = {"wrong_type": 'count: int = "three"\n', "untyped": "def double(x):\n    return 2 * x\n"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """mypy's report on every probe of every package, under the project's config."""
    root = tmp_path_factory.mktemp("typecheck")
    paths = []
    for package in PACKAGES:
        (root / "src" / package).mkdir(parents=True)
        (root / "src" / package / "__init__.py").write_text("")
        for name, source in PROBES.items():
            paths.append(root / "src" / package / f"{name}.py")
            paths[-1].write_text(source)
    out, err, status = api.run(["--config-file", str(CONFIG), "--cache-dir", str(root / "cache"),
                                "--no-warn-unused-configs", *map(str, paths)])
    assert not err, err
    assert status == 1
    return out


def _errors(report: str, package: str, probe: str) -> list[str]:
    return [line for line in report.splitlines()
            if f"src/{package}/{probe}.py:" in line and ": error: " in line]


@pytest.mark.parametrize("package", PACKAGES)
def test_a_type_error_is_reported(report: str, package: str) -> None:
    (line,) = _errors(report, package, "wrong_type")
    assert "wrong_type.py:1: error: Incompatible types in assignment" in line
    assert line.endswith("[assignment]")


@pytest.mark.parametrize("package", ["compiler", "hwmodels"])
def test_strict_packages_reject_untyped_functions(report: str, package: str) -> None:
    (line,) = _errors(report, package, "untyped")
    assert "Function is missing a type annotation" in line
    assert line.endswith("[no-untyped-def]")


def test_edgesim_is_checked_without_strict(report: str) -> None:
    assert _errors(report, "edgesim", "untyped") == []
