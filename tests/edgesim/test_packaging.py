"""The shipped targets and spaces are found from any folder: they live inside the hwmodels
package (installed) or beside it (checkout), never through a top-level `targets` name that a
user's own `targets/` folder could shadow; pyproject's explicit package list is complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from setuptools import find_packages

from edgesim.errors import UserError
from edgesim.sweep.space import load_space, resolve_space
from hwmodels.target import load_target, shipped_dir

ROOT = Path(__file__).resolve().parents[2]
EDGESIM = Path(sys.executable).parent / "edgesim"


def _hostile(folder: Path) -> Path:
    """A user's folder with its own `targets` package (a broken rpi4) and `hwmodels/`."""
    (folder / "targets").mkdir()
    (folder / "targets" / "__init__.py").write_text("")
    (folder / "targets" / "rpi4.yaml").write_text("kind: nonsense\n")
    (folder / "hwmodels").mkdir()
    (folder / "hwmodels" / "notes.py").write_text("x = 1\n")
    return folder


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_from_a_folder_with_targets_and_hwmodels_finds_the_shipped_targets(
        tmp_path: Path) -> None:
    here = _hostile(tmp_path)
    assert EDGESIM.exists(), f"the edgesim entry point is not installed beside {sys.executable}"
    listed = _run([str(EDGESIM), "targets", "--json"], here)
    assert listed.returncode == 0, listed.stderr
    assert {"rpi4", "rpi5", "cortex-m7"} <= {t["name"] for t in json.loads(
        listed.stdout)}
    sim = _run([str(EDGESIM), "simulate", "zoo:digits_cnn", "--target", "rpi4"], here)
    assert sim.returncode == 0, sim.stderr
    assert "on rpi4" in sim.stdout


def test_a_script_in_that_folder_uses_the_shipped_targets(tmp_path: Path) -> None:
    here = _hostile(tmp_path)
    (here / "script.py").write_text(
        "import hwmodels.target as t\n"
        "print(t.load_target('rpi4').cores, t.shipped_dir())\n")
    res = _run([sys.executable, "script.py"], here)  # the script's folder is sys.path[0]
    assert res.returncode == 0, res.stderr
    cores, folder = res.stdout.split()
    assert cores == "4" and Path(folder) == ROOT / "targets"


def test_shipped_space_by_name_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_space("macarray") == shipped_dir() / "spaces" / "macarray.yaml"
    assert load_space("macarray").kind == load_target("systolic-16x16").kind
    with pytest.raises(UserError, match="macarray"):
        resolve_space("no-such-space")
    (tmp_path / "macarray").write_text("")  # a file of that name here wins: it is a path
    assert resolve_space("macarray") == Path("macarray")


def test_pyproject_lists_every_package_and_maps_the_targets() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=["compiler*", "hwmodels*", "edgesim*"]))
    assert set(conf["packages"]) == found | {"hwmodels.targets"}
    assert conf["package-dir"] == {"hwmodels.targets": "targets"}
    assert "spaces/*.yaml" in conf["package-data"]["hwmodels.targets"]
