"""The compile's figures (pareto.png, layers.png) as plain-data jobs, and who draws them.

A job is a JSON-ready dict: which figure, the file to write, and the numbers it shows. Jobs go
to a `Plotter`: `PlotProcess` draws them in a child Python process started when the compile
starts, so matplotlib's imports (~0.6 s) and the drawing (~0.5-1 s) run beside the compile
instead of in it; `InlinePlots` draws them in this process at `finish`. The child's errors
surface at `finish` as `PlotError` (its exit code and last stderr line), never silently.

This module imports neither matplotlib nor the report: the child imports only what it draws.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

Job = dict[str, Any]  # {"figure": "front" | "layers", "path": str, ...the figure's numbers}
ROOT = Path(__file__).resolve().parents[1]  # the tree this module came from


class PlotError(RuntimeError):
    """The plotting process failed (an internal error, not bad input)."""


def front_job(model: str, target: str, title: str, front: list[dict[str, float]],
              marks: dict[str, list[float]], chosen: int, path: Path) -> Job:
    """pareto.png: the front's points (report.json's `front`), the marked points and the
    chosen one."""
    return {"figure": "front", "path": str(path), "title": f"{model} on {target}: {title}",
            "front": [{k: float(v) for k, v in p.items()} for p in front],
            "marks": {k: [float(x) for x in v] for k, v in marks.items()},
            "chosen": int(chosen)}


def layers_job(model: str, target: str, rows: Any, path: Path) -> Job:
    """layers.png: per layer of `rows` (report `LayerRow`s), the chosen bits and the predicted
    latency, coloured by what bounds it."""
    return {"figure": "layers", "path": str(path),
            "title": f"{model} on {target}: bits and predicted latency per layer",
            "names": [r.name for r in rows], "w_bits": [min(int(r.w_bits), 32) for r in rows],
            "a_bits": [min(int(r.a_bits), 32) for r in rows],
            "latency_ms": [float(r.latency_ms) for r in rows],
            "bound": [str(r.bound) for r in rows]}


def draw(job: Job) -> None:
    """Draw one job's figure and write it (PNG, atomically) to its path."""
    from edgesim.plot import front_plot, layer_plot, save

    if job["figure"] == "layers":
        fig = layer_plot(job["names"], job["w_bits"], job["a_bits"], job["latency_ms"],
                         job["bound"], title=job["title"])
    else:
        front = job["front"]
        x = next(iter(front[0])) if front else "metric"
        points = {x: [p[x] for p in front], "sensitivity": [p["sensitivity"] for p in front]}
        marks = {k: tuple(v) for k, v in job["marks"].items()}
        marks["chosen"] = (front[job["chosen"]][x], front[job["chosen"]]["sensitivity"])
        fig = front_plot(points, x, "sensitivity", highlight=[True] * len(front), marks=marks,
                         title=job["title"])
    save(fig, job["path"], make_folder=False)  # a staging folder that is gone stays gone


class Plotter(Protocol):
    """Where a compile's figure jobs go."""

    def submit(self, job: Job) -> None:
        """Queue `job`; a later job for the same path replaces it."""

    def finish(self) -> None:
        """Return once every submitted figure is written; raise if one failed."""

    def stop(self) -> None:
        """Abandon unwritten figures (the compile failed); idempotent."""


class InlinePlots:
    """Draws the jobs in this process, at `finish` (the last job per path only)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def submit(self, job: Job) -> None:
        self._jobs[job["path"]] = job

    def finish(self) -> None:
        jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            draw(job)

    def stop(self) -> None:
        self._jobs = {}


class PlotProcess:
    """A child process (`python -m edgesim.plot_worker`) that imports matplotlib at once and
    draws each job, one JSON line on its stdin, as it arrives."""

    def __init__(self) -> None:
        # stderr to a file, not a pipe: nothing can block on it while the compile runs
        self._err: IO[bytes] = tempfile.TemporaryFile()
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(x for x in (str(ROOT),
                                                           os.environ.get("PYTHONPATH")) if x)}
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "edgesim.plot_worker"],
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._err, env=env)
        except OSError:
            self._err.close()
            raise

    def submit(self, job: Job) -> None:
        assert self._proc.stdin is not None  # opened with PIPE
        try:
            self._proc.stdin.write(json.dumps(job).encode() + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError:  # the child has died: say why
            self.finish()

    def finish(self) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self._proc.wait()
        self._err.seek(0)
        lines = self._err.read().decode(errors="replace").strip().splitlines()
        self._err.close()
        if code != 0:
            raise PlotError(f"the plotting process failed (exit {code}): "
                            f"{lines[-1] if lines else 'no message'}")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        self._err.close()


def plotter(where: str | Plotter = "auto") -> Plotter:
    """A `PlotProcess` ("process"), `InlinePlots` ("inline"), or for "auto" a process unless
    this process has imported matplotlib already (then its import is paid for). Where no
    process can be started (no interpreter at `sys.executable`), the figures are drawn inline:
    an OSError here would read as bad input. A `Plotter` is returned as it is (the CLI starts
    its process before importing the pipeline, so that matplotlib's imports overlap those)."""
    if not isinstance(where, str):
        return where
    if where not in ("auto", "process", "inline"):
        raise ValueError(f"plots must be auto, process or inline, not {where!r}")
    if where == "inline" or (where == "auto" and "matplotlib" in sys.modules):
        return InlinePlots()
    try:
        return PlotProcess()
    except OSError:
        return InlinePlots()


@contextmanager
def stopped_on_error(plots: Plotter) -> Iterator[Plotter]:
    """`plots`, stopped if the body raises: a child must not write into a staging folder that
    is being removed."""
    try:
        yield plots
    except BaseException:
        plots.stop()
        raise
