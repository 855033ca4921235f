"""The compile's plotting process (`edgesim.report_plots.PlotProcess`): it writes the same PNG
bytes as drawing report.json's numbers in this process, its failures surface as PlotError,
and a failed compile leaves neither figures nor a running child behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesim import zoo
from edgesim.errors import UserError
from edgesim.pipeline import CompileOptions, compile_model
from edgesim.report_plots import PlotError, PlotProcess, draw, plotter


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
