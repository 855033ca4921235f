"""README.md's code runs as written: its Python block verbatim in a fresh interpreter (a new
process, as a reader pastes it), and the main command's `edgesim compile --example` part."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import edgesim

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_python_block_runs_verbatim_in_a_fresh_process(tmp_path: Path) -> None:
    (code,) = _blocks("python")
    assert "edgesim.compile(" in code and "edgesim.simulate(" in code  # the API it promises
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    latency, bits, accuracy = (float(x) for x in lines[0].split())
    assert latency > 0 and bits <= 4 + 1e-9 and 0.5 < accuracy <= 1  # budget bits=4 holds
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["avg_weight_bits"] == bits and report["target"] == "cortex-m7"
    int8, fp32 = (float(x) for x in lines[1].split())
    assert 0 < int8 < fp32  # resnet50 W8A8 on the Pi 5 beats fp32 in the model
    assert "[[" in lines[2]  # allocate's bits per layer printed as a list


def test_main_command_compiles_the_example(tmp_path: Path) -> None:
    (main,) = re.findall(r"<!-- main-command -->\n```bash\n(.*?)\n```", README, flags=re.S)
    command = main.split("&&", 1)[1].strip()
    argv = shlex.split(command)
    assert argv[:3] == ["edgesim", "compile", "--example"]
    res = subprocess.run([sys.executable, "-m", "edgesim", *argv[1:]], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = tmp_path / argv[argv.index("-o") + 1]
    assert {"model.rpi5.onnx", "report.json", "report.md", "pareto.png"} <= {
        p.name for p in out.iterdir()}


def test_no_submodule_shadows_an_api_function() -> None:
    """Importing a submodule binds it on the package: one named like an API function would
    replace that function (the bug where `edgesim.simulate` became a module)."""
    modules = {p.stem for p in (ROOT / "edgesim").glob("*.py")} | {
        p.name for p in (ROOT / "edgesim").iterdir() if (p / "__init__.py").exists()}
    assert not set(edgesim.__all__) & modules
    importlib.import_module("edgesim.simulation")  # the module the function uses
    assert callable(edgesim.simulate) and callable(edgesim.allocate)
