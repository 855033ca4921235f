"""The range search's bound is charged work (`edgesim.ranges._charged`): each trial run
counts the model's forward passes its feeds hold at `WORK_RATE`, so where the search stops
does not move with the CPU time those runs take (on CPU seconds it did: a loaded machine
takes more of them for the same run, as HAWQ's SwiftF0 cuts showed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import edgesim.ranges as ranges_module
from compiler.time_budget import WORK_RATE, WorkMeter
from edgesim import calibration as cal
from edgesim.loading import load_graph
from edgesim.quantize import quantize_model


def _burning(monkeypatch: pytest.MonkeyPatch, burn_s: float) -> None:
    """Every onnxruntime run of the range search first burns `burn_s` CPU seconds on this
    thread (a loaded machine: the same run costs more CPU time)."""
    real = ranges_module._onnxruntime_runner

    def loaded(qg):  # type: ignore[no-untyped-def]
        run = real(qg)

        def slow(feeds):  # type: ignore[no-untyped-def]
            end = time.process_time() + burn_s
            while time.process_time() < end:
                pass
            return run(feeds)
        return slow
    monkeypatch.setattr(ranges_module, "_onnxruntime_runner", loaded)


def _macs_per_sample() -> float:
    """digits_cnn's multiply-accumulates per sample, counted from its layers' shapes here
    (conv: output elements x input channels per group x kernel area; linear: in x out)."""
    g = load_graph("zoo:digits_cnn")
    total = 0
    for layer in g.layers:
        if layer.kind == "conv":
            w = g.types[layer.inputs[1]].shape  # [out, in / groups, kh, kw]
            total += int(np.prod(g.types[layer.outputs[0]].shape)) * int(np.prod(w[1:]))
        elif layer.kind == "linear":
            w = g.types[layer.inputs[1]].shape
            rows = int(np.prod(g.types[layer.outputs[0]].shape)) // w[0]
            total += rows * int(np.prod(w))
    return total / cal.batch_size(g)


def test_a_run_is_charged_the_forward_passes_its_feeds_hold() -> None:
    """One batch costs at least its MACs at WORK_RATE (plus elementwise work, far less
    than the MACs on a CNN); two batches in one run cost twice one batch."""
    g = load_graph("zoo:digits_cnn")
    meter = WorkMeter()
    run = ranges_module._charged(g, lambda qg: lambda feeds: feeds, meter)(g)
    data = cal.random_samples(g, 2 * cal.batch_size(g), seed=1)
    one = next(iter(cal.batches(g, data)))
    run(one)
    single = meter()
    assert _macs_per_sample() * cal.batch_size(g) / WORK_RATE <= single
    assert single < 2 * _macs_per_sample() * cal.batch_size(g) / WORK_RATE
    run({n: np.concatenate([x, x]) for n, x in one.items()})
    assert meter() == pytest.approx(3 * single)


def test_a_busy_machine_does_not_move_where_the_search_stops(tmp_path, monkeypatch) -> None:
    """A bound of 40 samples' MACs, less than the search's whole work (it ran 8 assignments
    unbounded, the min/max incumbent alone all 16 held-out samples): it stops after the
    same assignment, with the same file, when every run also burns 50 ms of CPU. (On CPU
    seconds the bound was 2.4 ms, spent before the first trial whatever the load: it
    stopped after the incumbent, where here a trial or more runs before the cut.)"""
    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 32, seed=6)
    bound = 40 * _macs_per_sample() / WORK_RATE

    def cut(name: str) -> list[str]:
        got = quantize_model(g, 8, calib=data, out=tmp_path / name, kernel_check="off",
                             range_budget_s=bound)
        return [n for n in got.notes if n.startswith("range search")]
    idle = cut("idle.onnx")
    _burning(monkeypatch, 0.05)
    assert cut("busy.onnx") == idle
    assert (tmp_path / "busy.onnx").read_bytes() == (tmp_path / "idle.onnx").read_bytes()
    ran = [int(w) for w in idle[0].split("after ")[1].split()[:1]]
    assert len(idle) == 1 and 1 < ran[0] < 8
