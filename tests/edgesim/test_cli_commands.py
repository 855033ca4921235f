"""`sweep`, `pareto` and `evaluate` driven as a user runs them (installed entry point)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from edgesim import zoo
from edgesim.sweep.store import RESULTS_NAME, read_results
from tests.edgesim.test_cli import _one_line_error, edgesim

SPACE = """\
base: systolic-16x16
parameters:
  rows: [8, 16]
  cols: [8, 16]
  dataflow: [os, ws]
models: [zoo:digits_cnn]
"""


def test_sweep_then_pareto(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "results"
    res = edgesim("sweep", str(space), "-o", str(out), "--workers", "1", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "8 points computed" in res.stdout  # 2 rows x 2 cols x 2 dataflows
    again = edgesim("sweep", str(space), "-o", str(out), "--workers", "1", "--quiet")
    assert "0 points computed" in again.stdout and "8 already stored" in again.stdout
    png = tmp_path / "front.png"
    pa = edgesim("pareto", str(out), "--x", "area_proxy", "--y", "digits_cnn.latency_s",
                 "-o", str(png), "--json")
    assert pa.returncode == 0, pa.stderr
    report = json.loads(pa.stdout)
    assert report["points"] == 8 and png.is_file()
    # -o plot.png writes that plot and nothing else beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.png", "results", "space.yaml"]
    # -o table.csv writes that table (the old code made a folder named table.csv)
    csv = edgesim("pareto", str(out), "-o", str(tmp_path / "table.csv"), "--quiet")
    assert csv.returncode == 0, csv.stderr
    assert (tmp_path / "table.csv").read_text().startswith("id,")
    rows = report["front"]
    assert len(rows) >= 1
    assert all(type(r["rows"]) is int and type(r["cols"]) is int for r in rows)  # not 8.0
    # brute force over every stored point: the front is exactly the non-dominated set
    _, records, _ = read_results(out / RESULTS_NAME)
    pts = {r["id"]: (r["area_proxy"], r["models"]["digits_cnn"]["latency_s"]) for r in records}
    brute = {i for i, (a, lat) in pts.items() if not any(
        b <= a and m <= lat and (b < a or m < lat) for b, m in pts.values())}
    assert {r["id"] for r in rows} == brute


def test_malformed_space_is_one_line(tmp_path: Path) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text(SPACE.replace("rows: [8, 16]", "rows: [8, sixteen]"))
    _one_line_error(edgesim("sweep", str(space), "-o", str(tmp_path / "r")), "rows")


def test_evaluate_reports_accuracy_and_latency(tmp_path: Path) -> None:
    model = tmp_path / "digits.onnx"
    onnx.save(zoo.build("digits_cnn"), model)
    d = zoo.load_digits_data()
    data = tmp_path / "test.npz"
    np.savez(data, input=d["x_test"], labels=d["y_test"])
    res = edgesim("evaluate", str(model), "--data", str(data), "--runs", "5", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["samples"] == 360 and r["accuracy"] >= 0.97  # the shipped model: 98.9 %
    assert 0 < r["latency_median_ms"] <= r["latency_p90_ms"]
    _one_line_error(edgesim("evaluate", str(tmp_path / "nope.onnx"), "--data", str(data)),
                    "nope.onnx")
