"""A compile's report accounts for its time (issue 17): every phase but the final write of the
reports is timed in report.json, the plots included, and the page embeds the plots drawn
before it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from edgesim import api

PHASES = ["loading model and target", "sensitivity (proxy)", "allocating bits",
          "quantising and emitting", "measuring fidelity in onnxruntime",
          "drawing the report's plots"]


def test_report_times_every_phase_and_embeds_the_drawn_plots(tmp_path: Path) -> None:
    r = api.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path, method="proxy", quiet=True)
    timings = json.loads((tmp_path / "report.json").read_text())["timings_s"]
    assert list(timings) == PHASES  # in the order they ran
    assert all(s > 0 for s in timings.values()) and r.timings_s == timings
    page = (tmp_path / "report.html").read_text()
    for png in ("pareto.png", "layers.png"):
        assert base64.b64encode((tmp_path / png).read_bytes()).decode() in page
