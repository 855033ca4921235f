"""Pareto extraction over sweep results: the non-dominated rows equal an O(n^2) brute-force
check, records flatten to the documented columns, and JSONL, JSON and CSV load alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesim.errors import UserError
from edgesim.pareto import (
    flatten,
    front_mask,
    load_results,
    pareto,
    parse_objective,
    table_from_rows,
    write_csv,
)


def brute_force_front(points: np.ndarray, senses: list[str]) -> np.ndarray:
    """Row i is on the front unless some j is no worse everywhere and better somewhere."""
    p = points * np.array([1.0 if s == "min" else -1.0 for s in senses])
    n = len(p)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if np.all(p[j] <= p[i]) and np.any(p[j] < p[i]):
                keep[i] = False
                break
    return keep


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 60), d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_front_equals_brute_force_on_random_sets(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 6, size=(n, d)).astype(float)  # small integers: many ties
    senses = [str(s) for s in rng.choice(["min", "max"], size=d)]
    table = table_from_rows([{f"o{k}": points[i, k] for k in range(d)} for i in range(n)])
    mask = front_mask(table, [f"o{k}:{s}" for k, s in enumerate(senses)])
    assert mask.tolist() == brute_force_front(points, senses).tolist()


def test_rows_missing_an_objective_are_never_on_the_front() -> None:
    table = table_from_rows([{"a": 1.0, "b": 1.0}, {"a": 0.0}, {"a": 2.0, "b": 0.5}])
    assert front_mask(table, ["a", "b"]).tolist() == [True, False, True]


def _record(i: int, latency: tuple[float, float], area: float, error: bool = False) -> dict:
    rec = {"id": f"p{i}", "index": i,
           "params": {"rows": 8 * (i + 1), "dataflow": "ws",
                      "precisions": [{"bits": 8, "macs_per_pe_cycle": 1.0}]},
           "area_proxy": area, "area_mac_bits": 64.0, "area_sram_bytes": area - 64.0,
           "models": {"a": {"latency_s": latency[0], "energy_j": 1.0, "util": 0.5,
                            "bound": "dram", "alloc": {"total_sens": 3.0, "w_bits": [4, 8]}},
                      "b": {"latency_s": latency[1], "energy_j": 2.0, "util": 0.25,
                            "bound": "compute"}}}
    if error:
        rec = {"id": f"p{i}", "index": i, "params": rec["params"], "error": "invalid design"}
    return rec


def test_flatten_names_the_documented_columns() -> None:
    flat = flatten(_record(0, (1.0, 2.5), 100.0))
    assert flat["rows"] == 8 and flat["dataflow"] == "ws"
    assert json.loads(flat["precisions"]) == [{"bits": 8, "macs_per_pe_cycle": 1.0}]
    assert flat["a.latency_s"] == 1.0 and flat["b.util"] == 0.25
    assert flat["a.alloc.total_sens"] == 3.0 and "a.alloc.w_bits" not in flat
    assert flat["latency_s"] == 3.5 and flat["energy_j"] == 3.0  # sums over the models
    assert flat["area_proxy"] == 100.0


def _results(tmp_path: Path) -> tuple[Path, list[dict]]:
    rng = np.random.default_rng(7)
    records = [_record(i, tuple(rng.uniform(0.1, 10.0, 2)), float(rng.uniform(1e3, 1e6)))
               for i in range(40)] + [_record(40, (0.0, 0.0), 0.0, error=True)]
    path = tmp_path / "results.jsonl"
    lines = [json.dumps({"header": {"fingerprint": "f"}})] + [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path, records


def test_jsonl_json_and_csv_load_the_same_table(tmp_path: Path) -> None:
    path, records = _results(tmp_path)
    from_dir = load_results(tmp_path)
    assert from_dir.dropped == 1 and len(from_dir) == 40
    (tmp_path / "r.json").write_text(json.dumps({"points": records}))
    from_json = load_results(tmp_path / "r.json")
    from_csv = load_results(write_csv(from_dir, tmp_path / "r.csv"))
    for other in (from_json, from_csv):
        assert list(other.columns) == list(from_dir.columns)
        for name, col in from_dir.columns.items():
            if col.dtype.kind == "f":
                np.testing.assert_array_equal(other.columns[name], col)
            else:
                assert other.columns[name].tolist() == col.tolist()


def test_pareto_writes_the_brute_force_front_and_plots(tmp_path: Path) -> None:
    path, records = _results(tmp_path)
    result = pareto(path, ["area_proxy", "latency_s", "b.util"], output=tmp_path / "out")
    good = [r for r in records if "error" not in r]
    points = np.array([[r["area_proxy"], sum(m["latency_s"] for m in r["models"].values()),
                        r["models"]["b"]["util"]] for r in good])
    expected = {r["id"] for r, keep in zip(good, brute_force_front(points, ["min", "min", "max"]))
                if keep}
    assert set(result.front.columns["id"].tolist()) == expected
    assert result.objectives == ("area_proxy:min", "latency_s:min", "b.util:max")
    assert {Path(f).name for f in result.files} == {"front.csv", "front.png", "summary.png"}
    assert set(load_results(tmp_path / "out" / "front.csv").columns["id"].tolist()) == expected
    assert json.loads(json.dumps(result.to_dict()))["points"] == 40


def test_objectives_resolve_by_suffix_and_refuse_unknown_or_ambiguous(tmp_path: Path) -> None:
    table = load_results(_results(tmp_path)[0])
    assert table.resolve("alloc.total_sens") == "a.alloc.total_sens"
    assert parse_objective("throughput_ips") == ("throughput_ips", "max")
    assert parse_objective("a.util") == ("a.util", "max")
    assert parse_objective("util:min") == ("util", "min")
    for bad, what in (("util", "ambiguous"), ("nope", "no column"), ("dataflow", "not numeric")):
        with pytest.raises(UserError, match=what):
            front_mask(table, [bad])
    with pytest.raises(UserError, match="min or max"):
        parse_objective("area_proxy:least")


def test_pareto_never_replaces_what_the_user_had(tmp_path: Path) -> None:
    """`-o DIR` is claimed as compile's is (`edgesim.output`): a non-empty folder edgesim did
    not make is refused before anything is written (the old code wrote front.csv, front.png
    and summary.png over the user's files); with `force` edgesim's three files are written
    and the user's other files stay."""
    path, _ = _results(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "front.png").write_bytes(b"the user's plot")
    (out / "notes.txt").write_text("the user's notes")
    with pytest.raises(UserError, match="did not make"):
        pareto(path, ["area_proxy", "latency_s"], output=out)
    assert sorted(p.name for p in out.iterdir()) == ["front.png", "notes.txt"]
    assert (out / "front.png").read_bytes() == b"the user's plot"
    result = pareto(path, ["area_proxy", "latency_s"], output=out, force=True)
    assert {Path(f).name for f in result.files} == {"front.csv", "front.png", "summary.png"}
    assert all(Path(f).parent == out for f in result.files)
    assert (out / "notes.txt").read_text() == "the user's notes"
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_results(out / "front.csv").columns["id"].tolist() == \
        result.front.columns["id"].tolist()


def test_output_suffix_names_one_file_or_a_folder(tmp_path: Path) -> None:
    """-o by suffix: `x.csv` is the front's CSV and nothing else (the old code made a folder
    named x.csv holding front.csv and two plots), `x.png` the front plot only, a plot format
    edgesim cannot write is refused before anything is written, anything else is a folder."""
    path, records = _results(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = pareto(path, ["area_proxy", "latency_s"], output=out / "front.csv")
    assert (out / "front.csv").is_file() and result.files == (str(out / "front.csv"),)
    good = [r for r in records if "error" not in r]
    points = np.array([[r["area_proxy"], sum(m["latency_s"] for m in r["models"].values())]
                       for r in good])
    expected = {r["id"] for r, keep in zip(good, brute_force_front(points, ["min", "min"]))
                if keep}
    assert set(load_results(out / "front.csv").columns["id"].tolist()) == expected
    pareto(path, ["area_proxy", "latency_s"], output=out / "plot.png")
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["front.csv", "plot.png"]
    with pytest.raises(UserError, match="PNG"):
        pareto(path, ["area_proxy", "latency_s"], output=out / "plot.svg")
    with pytest.raises(UserError, match="no-plots"):
        pareto(path, ["area_proxy", "latency_s"], output=out / "p2.png", plots=False)
    with pytest.raises(UserError, match="does not exist"):
        pareto(path, ["area_proxy", "latency_s"], output=tmp_path / "nowhere" / "f.csv")
    assert sorted(p.name for p in out.iterdir()) == ["front.csv", "plot.png"]
    pareto(path, ["area_proxy", "latency_s"], output=tmp_path / "front.dir")
    assert (tmp_path / "front.dir" / "front.csv").is_file()
