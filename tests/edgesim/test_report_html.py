"""The compile report people look at: report.html is one self-contained page (plots embedded,
nothing fetched), with a row per layer; the per-layer chart has units and a log axis when the
latencies span decades."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from edgesim import api
from edgesim.plot import layer_plot
from edgesim.zoo import load_digits_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    d = load_digits_data()
    r = api.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", method="proxy",
                    calib={"input": d["x_calib"][:32]})
    page = (tmp_path / "o" / "report.html").read_text()
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r.files["report_html"] == str(tmp_path / "o" / "report.html")
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)  # nothing external
    assert "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert (tmp_path / "o" / "layers.png").read_bytes().startswith(PNG_MAGIC)
    assert page.count("<tr>") == len(report["layers"]) + 1  # header + one row per layer
    assert f"<h1>{report['model']} on {report['target']}" in page


def test_layer_plot_units_and_log_axis() -> None:
    fig = layer_plot(["a", "b", "c"], [4, 8, 32], [8, 8, 32], [0.001, 0.5, 2.0],
                     ["compute", "dram", "overhead"])
    top, bottom = fig.axes[:2]
    assert top.get_ylabel() == "bits" and bottom.get_ylabel() == "predicted latency (ms)"
    assert bottom.get_yscale() == "log"  # 0.001 .. 2 ms: more than two decades
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["a", "b", "c"]
    flat = layer_plot(["a", "b"], [8, 8], [8, 8], [1.0, 2.0], ["compute", "compute"])
    assert flat.axes[1].get_yscale() == "linear"
