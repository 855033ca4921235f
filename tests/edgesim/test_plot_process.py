"""The compile's plotting process (`edgesim.report_plots.PlotProcess`): it writes the same PNG
bytes as drawing report.json's numbers in this process, its failures surface as PlotError,
and a failed compile leaves neither figures nor a running child behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgesim import zoo
from edgesim.errors import UserError
from edgesim.pipeline import CompileOptions, compile_model
from edgesim.report_plots import InlinePlots, PlotError, PlotProcess, draw, plotter

ROOT = Path(__file__).resolve().parents[2]


def _jobs_from_report(report: dict, folder: Path) -> list[dict]:
    """pareto.png and layers.png jobs rebuilt from report.json alone (an independent source:
    the report, not the allocation the compile drew from)."""
    title = f"{report['model']} on {report['target']}"
    return [{"figure": "front", "path": str(folder / "pareto.png"),
             "title": f"{title}: {report['method']} sensitivity vs {report['metric']}",
             "front": report["front"], "marks": report["marks"], "chosen": report["chosen"]},
            {"figure": "layers", "path": str(folder / "layers.png"),
             "title": f"{title}: bits and predicted latency per layer",
             "names": [r["name"] for r in report["layers"]],
             "w_bits": [min(r["w_bits"], 32) for r in report["layers"]],
             "a_bits": [min(r["a_bits"], 32) for r in report["layers"]],
             "latency_ms": [r["latency_ms"] for r in report["layers"]],
             "bound": [r["bound"] for r in report["layers"]]}]


def test_process_draws_what_report_json_says(tmp_path: Path) -> None:
    out = tmp_path / "out"
    compile_model(zoo.build("digits_cnn"), "rpi5", out, calib_random=8,
                  options=CompileOptions(quiet=True, method="proxy", plots="process"))
    report = json.loads((out / "report.json").read_text())
    here = tmp_path / "here"
    here.mkdir()
    for job in _jobs_from_report(report, here):  # drawn in this process, from the report
        draw(job)
    for name in ("pareto.png", "layers.png"):
        assert (out / name).read_bytes() == (here / name).read_bytes(), name
    assert not any(p.name.startswith(".") for p in out.iterdir() if p.is_dir())


def test_a_failing_job_raises_with_the_childs_error(tmp_path: Path) -> None:
    plots = PlotProcess()
    plots.submit({"figure": "front", "path": str(tmp_path / "p.png"), "title": "t",
                  "front": [{"size_mb": 1.0, "sensitivity": 2.0}], "marks": {}, "chosen": 5})
    with pytest.raises(PlotError, match=r"exit 1\): IndexError"):
        plots.finish()
    assert not (tmp_path / "p.png").exists()


def test_a_missing_folder_is_an_error_not_a_new_folder(tmp_path: Path) -> None:
    plots = PlotProcess()
    gone = tmp_path / "gone"  # a staging folder removed while the child draws
    plots.submit({"figure": "layers", "path": str(gone / "layers.png"), "title": "t",
                  "names": ["a"], "w_bits": [8], "a_bits": [8], "latency_ms": [1.0],
                  "bound": ["compute"]})
    with pytest.raises(PlotError, match="FileNotFoundError"):
        plots.finish()
    assert not gone.exists()


def test_stop_ends_the_child() -> None:
    plots = PlotProcess()
    plots.stop()
    assert plots._proc.returncode is not None  # killed and reaped, not left running
    plots.stop()  # idempotent


def test_failed_compile_stops_the_child_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match="min-fidelity"):
        compile_model(zoo.build("digits_cnn"), "rpi5", out, calib_random=8,
                      options=CompileOptions(quiet=True, method="proxy", plots="process",
                                               min_fidelity=1.5))
    left = list(out.rglob("*")) if out.exists() else []
    assert not [p for p in left if p.suffix in (".png", ".onnx", ".json", ".tmp")]
    assert not [p for p in left if p.is_dir()]


def test_plotter_choice() -> None:
    import matplotlib  # noqa: F401 - "auto" draws inline once this process has paid for it

    assert type(plotter("auto")).__name__ == "InlinePlots"
    assert type(plotter("inline")).__name__ == "InlinePlots"
    with pytest.raises(ValueError, match="plots must be"):
        plotter("svg")


def test_no_interpreter_draws_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    plots = plotter("process")
    assert type(plots).__name__ == "InlinePlots"


class _Recorder(InlinePlots):
    """Draws in this process and keeps every job it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[dict] = []

    def submit(self, job: dict) -> None:
        self.jobs.append(job)
        super().submit(job)


def test_layers_figure_is_sent_once_with_the_reports_latencies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conv emitted with run-time ranges is re-costed after the allocation (silero's and
    ppocr's case): layers.png was sent twice, first with the planned QLinearConv latency."""
    import onnx

    from edgesim import alloc_dynamic
    from tests.edgesim.test_alloc_dynamic import _data, _model

    # on this 3-layer model the switch costs more than the guard's 1 % (test_alloc_dynamic)
    monkeypatch.setattr(alloc_dynamic, "MAX_ADDED_LATENCY", float("inf"))

    model, out, plots = tmp_path / "silu.onnx", tmp_path / "out", _Recorder()
    onnx.save(_model("silu"), model)
    compile_model(str(model), "rpi5", out, calib={"x": _data(32, 0)},
                  options=CompileOptions(quiet=True, method="uniform", weight_bits=(8,),
                                         plots=plots))
    report = json.loads((out / "report.json").read_text())
    assert any(r.get("onnxruntime_kernel") == "ConvInteger" for r in report["layers"])
    assert sorted(j["figure"] for j in plots.jobs) == ["front", "layers"]
    (layers,) = [j for j in plots.jobs if j["figure"] == "layers"]
    assert layers["latency_ms"] == [r["latency_ms"] for r in report["layers"]]


def test_the_cli_starts_the_plotting_process_before_the_pipelines_imports(
        tmp_path: Path) -> None:
    code = ("import sys\n"
            "from edgesim import cli, report_plots\n"
            "start = report_plots.PlotProcess.__init__\n"
            "def init(self):\n"
            "    print('pipeline imported:', 'edgesim.pipeline' in sys.modules, flush=True)\n"
            "    start(self)\n"
            "report_plots.PlotProcess.__init__ = init\n"
            f"sys.exit(cli.main(['compile', '--example', '--method', 'proxy', '--quiet', "
            f"'-o', {str(tmp_path / 'out')!r}]))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.splitlines()[0] == "pipeline imported: False"
    assert (tmp_path / "out" / "layers.png").exists()
