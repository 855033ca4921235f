"""The fidelity bench's table (bench/fidelity/measurements.csv): rows of a build no runtime
profile models are kept with their evidence and scored nowhere; counts are checked against the
CSV read here, not against the bench's own bookkeeping."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fidelity", BENCH / "bench_fidelity.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows() -> list[dict[str, str]]:
    with open(BENCH / "fidelity" / "measurements.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_armv7_zero2w_rows_are_marked_with_their_evidence(bench) -> None:
    # Tencent/ncnn issue #3485: Qengineering built the Zero 2 W figures as 32-bit ncnn
    armv7 = [r for r in _rows() if r["runtime"] in bench.UNMODELLED_RUNTIMES]
    assert len(armv7) == 38 and {r["target"] for r in armv7} == {"rpizero2w"}
    assert all("issue #3485" in r["source"] and "PI3=ON" in r["source"] for r in armv7)
    # the same board's scored rows are the 64-bit OS ones, each model at 1 and 4 threads
    scored = [r for r in _rows() if r["target"] == "rpizero2w" and r not in armv7]
    assert len(scored) == 38 and all("64 Bit" in r["source"] for r in scored)


def test_unmodelled_rows_are_scored_nowhere(bench) -> None:
    rows = _rows()
    kept = [r for r in rows if r["runtime"] not in bench.UNMODELLED_RUNTIMES]
    report, _ = bench.run("as-measured")
    assert report["overall"]["n"] == len(kept)
    assert sum(g["n"] for g in report["per_device"].values()) == len(kept)
    assert report["unmodelled_builds"]["ncnn-2022-armv7"]["n"] == len(rows) - len(kept)
    # 1 -> 4 thread pairs: (target, runtime, model, precision) with both thread counts
    have: dict[tuple[str, ...], set[str]] = {}
    for r in kept:
        have.setdefault((r["target"], r["runtime"], r["model"], r["precision"]),
                        set()).add(r["threads"])
    assert report["thread_scaling_1_to_4"]["n"] == sum(t >= {"1", "4"} for t in have.values())


def _extract() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extract_ncnn",
                                                  BENCH / "fidelity" / "extract_ncnn.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shape_hints_of_one_dimensional_blobs_count_their_elements() -> None:
    """ncnn's `-23330` hint: four values per blob (dims, w, h, c). A pooled 72-channel vector
    (mobilenet_v3's first SE block) holds 72 elements; the old parser read its padding as a
    second blob and counted 73."""
    shapes = _extract().shapes
    assert shapes({"-23330": "4,1,72,1,1"}, 1) == [72]
    assert shapes({"-23330": "8,3,112,112,16,3,112,112,16"}, 2) == [112 * 112 * 16] * 2
    assert shapes({"-23330": "8,1,72,1,1,2,5,7,1"}, 2) == [72, 35]
    # and in the table: the global pool of mobilenet_v3's first SE block (28 x 28 x 72 in)
    with open(BENCH / "fidelity" / "layers.csv", newline="") as f:
        pool = [r for r in csv.DictReader(f) if (r["model"], r["layer"]) == ("mobilenet_v3", "355")]
    assert [(int(r["a_in"]), int(r["a_out"])) for r in pool] == [(28 * 28 * 72, 72)]


def test_the_layer_table_prices_an_exp_where_ncnn_evaluates_one() -> None:
    """`transcendentals` of layers.csv: one per element of ncnn's Swish and Softmax (exp_ps),
    none for HardSwish / HardSigmoid / ReLU (clamps). Oracle: the layer types of ncnn's
    benchmark/models/*.param -- efficientnet_b0's activations are all Swish, mobilenet_v3's
    HardSwish, HardSigmoid or ReLU."""
    with open(BENCH / "fidelity" / "layers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    def exps(model: str, kind: str) -> set[tuple[int, int]]:
        return {(int(r["transcendentals"]), int(r["a_out"])) for r in rows
                if r["model"] == model and r["kind"] == kind}
    swish, hard = exps("efficientnet_b0", "activation"), exps("mobilenet_v3", "activation")
    assert swish and hard  # both networks have activation layers
    assert all(t == n for t, n in swish) and all(t == 0 for t, _ in hard)
    assert all(t == n for model in {r["model"] for r in rows}
               for t, n in exps(model, "softmax"))
