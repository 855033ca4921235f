"""A prepared CPU cost call gives `hwmodels.cpu.evaluate`'s numbers bit for bit, on every zoo
model (the heavy ones at reduced sizes: the layer kinds stay, the build time drops), every
shipped CPU target, every runtime and thread count; the prepared call refuses other targets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler.frontend import load
from edgesim import zoo
from hwmodels import prepared_cpu
from hwmodels.cost import evaluate
from hwmodels.cpu import RUNTIMES, CpuTarget
from hwmodels.target import list_targets, load_target

# float32, float16, int8, weight-only low bits, mixed widths
BITS = np.array([[32, 32], [16, 16], [8, 8], [4, 8], [4, 32], [3, 8], [2, 8], [1, 8], [8, 16]])
SMALL = {"resnet18": {"resolution": 32, "num_classes": 10},
         "resnet50": {"resolution": 32, "num_classes": 10},
         "mobilenet_v2": {"resolution": 32, "num_classes": 10},
         "vit_tiny": {"resolution": 32, "depth": 2, "num_classes": 10},
         "minilm": {"vocab": 500, "seq": 16, "d": 96, "depth": 2, "hidden": 192},
         "llama": {"vocab": 500, "seq": 16, "d": 128, "depth": 2, "hidden": 256}}
CPUS = [n for n in list_targets() if isinstance(load_target(n), CpuTarget)]


@pytest.fixture(scope="module", params=sorted(zoo.ZOO))
def table(request):
    return load(zoo.build(request.param, **SMALL.get(request.param, {}))).layer_table()


def _fields(cost) -> dict:
    return {f.name: getattr(cost, f.name) for f in dataclasses.fields(cost)}


def test_every_cpu_target_is_covered() -> None:
    assert {"rpi3", "rpi4", "rpi5"} <= set(CPUS)


@pytest.mark.parametrize(("runtime", "threads"),
                         [(r, None) for r in sorted(RUNTIMES)] + [("onnxruntime", 1)])
def test_prepared_call_equals_evaluate(table, runtime: str, threads: int | None) -> None:
    for name in CPUS:
        target = load_target(name)
        want = evaluate(table, BITS, target, threads=threads, runtime=runtime)
        call = prepared_cpu.prepare(table, BITS, target, threads=threads, runtime=runtime)
        got = prepared_cpu.run(call)
        for field, value in _fields(want).items():
            np.testing.assert_array_equal(_fields(got)[field], value,
                                          err_msg=f"{name} {runtime} {field}")
        assert got.cycles.shape == (len(table), len(BITS))


def test_a_prepared_call_runs_again_with_the_same_result() -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    call = prepared_cpu.prepare(table, BITS, load_target("rpi4"))
    first, second = prepared_cpu.run(call), prepared_cpu.run(call)
    assert first.cycles is not second.cycles  # a fresh output per call, not a shared buffer
    np.testing.assert_array_equal(first.latency_s, second.latency_s)


def test_prepared_cpu_calls_refuse_other_targets() -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    with pytest.raises(TypeError, match="CPUs"):
        prepared_cpu.prepare(table, BITS, load_target("systolic-16x16"))


@pytest.mark.parametrize(("kw", "match"), [({"runtime": "tvm"}, "runtime"),
                                           ({"threads": 0}, "threads")])
def test_bad_runtime_or_threads_are_refused_at_prepare(kw: dict, match: str) -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    with pytest.raises(ValueError, match=match):
        prepared_cpu.prepare(table, BITS, load_target("rpi5"), **kw)
