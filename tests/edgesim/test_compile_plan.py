"""`compile --pick` emits any point of the front; `compile --assignment` re-emits a given plan
(a report.json or a {layer: bits} JSON) without recomputing sensitivities."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgesim.errors import UserError
from edgesim.pipeline import CompileOptions, compile_model

pytestmark = pytest.mark.ort


def _bits(r) -> dict:
    return {x.name: (x.w_bits, x.a_bits) for x in r.layers}


def test_pick_and_assignment_round_trip(tmp_path) -> None:
    opts = CompileOptions(method="proxy", quiet=True)
    knee = compile_model("zoo:digits_cnn", "rpi5", tmp_path / "knee", calib_random=4,
                         options=opts)
    cheapest = compile_model("zoo:digits_cnn", "rpi5", tmp_path / "p0", calib_random=4,
                             options=CompileOptions(method="proxy", quiet=True, pick=0))
    assert cheapest.chosen == 0 and cheapest.result.latency_ms <= knee.result.latency_ms
    # the kernel check ran: report.json / report.md show planned / onnxruntime per MAC layer
    layers = json.loads((tmp_path / "knee" / "report.json").read_text())["layers"]
    macs = [x for x in layers if x["kind"] in ("conv", "linear")]
    assert macs and all(x["planned_kernel"] and x["onnxruntime_kernel"] in (
        x["planned_kernel"], "") for x in macs)
    md = (tmp_path / "knee" / "report.md").read_text()
    assert f"kernel check: {len(macs)} layers" in md and "0 mismatches" in md
    assert f"{macs[0]['planned_kernel']} / " in md
    # re-emit the cheapest plan from its report.json: same bits, same predictions
    report = tmp_path / "p0" / "report.json"
    again = compile_model("zoo:digits_cnn", "rpi5", tmp_path / "again", calib_random=4,
                          options=CompileOptions(quiet=True, assignment=str(report)))
    assert _bits(again) == _bits(cheapest)
    assert again.result.latency_ms == pytest.approx(cheapest.result.latency_ms, rel=1e-9)
    # and from a {layer: [w, a]} plan through the CLI
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"conv1/Conv": [8, 8], "fc/Gemm": 4}))
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "edgesim", "compile", "zoo:digits_cnn",
                           "--calib-random", "4", "--assignment", str(plan), "-o", str(out),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    bits = {x["name"]: (x["w_bits"], x["a_bits"]) for x in json.loads(done.stdout)["layers"]}
    assert bits["conv1/Conv"] == (8, 8) and bits["fc/Gemm"] == (4, 32)
    assert bits["conv2/Conv"] == (32, 32)


def test_pick_outside_the_front_names_the_flag(tmp_path) -> None:
    with pytest.raises(UserError, match="--pick"):
        compile_model("zoo:digits_cnn", "rpi5", tmp_path / "x", calib_random=4,
                      options=CompileOptions(method="proxy", quiet=True, pick=999))
