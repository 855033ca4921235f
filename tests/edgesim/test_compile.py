"""`edgesim compile` end to end, as a user runs it (subprocess of the installed entry point), on
the shipped example for a Raspberry Pi 5 and 4, a Cortex-M7 and a sparse MAC array."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from edgesim import zoo
from edgesim.allocation import PLAN_GAP_NOTE
from tests.edgesim.test_cli import _one_line_error, edgesim

# target, method, budget (None: knee), how to read the budget back from report.json
RUNS = [
    ("rpi5", "hawq", None),
    ("rpi4", "lrp", "bits=6"),
    ("cortex-m7", "proxy", "size=0.05MB"),
    ("sparse-mac-32x32", "uniform", "bits=6"),
]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _check_outputs(out: Path, report: dict, target: str) -> None:
    import onnxruntime as ort

    model = out / f"model.{target}.onnx"
    for name in (model.name, "report.json", "report.md", "pareto.png"):
        assert (out / name).is_file(), name
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = zoo.load_digits_data()["x_test"][:1]
    (logits,) = sess.run(None, {"input": x})
    assert logits.shape == (1, 10) and np.isfinite(logits).all()
    width, height = _png_size(out / "pareto.png")
    assert width >= 400 and height >= 300 and (out / "pareto.png").stat().st_size > 10_000
    assert report["file_bytes"] == model.stat().st_size
    assert "# digits_cnn on" in (out / "report.md").read_text()


def _check_totals(report: dict) -> None:
    layers, result = report["layers"], report["result"]
    assert result["latency_ms"] == pytest.approx(sum(x["latency_ms"] for x in layers))
    assert result["energy_mj"] * 1e3 == pytest.approx(sum(x["energy_uj"] for x in layers))
    assert result["weight_bytes"] == pytest.approx(sum(x["weight_bytes"] for x in layers))
    q = [x for x in layers if x["sensitivity"] is not None]
    assert report["sensitivity"] == pytest.approx(sum(x["sensitivity"] for x in q), rel=1e-6)
    avg = sum(min(x["w_bits"], 32) * x["params"] for x in q) / sum(x["params"] for x in q)
    assert report["avg_weight_bits"] == pytest.approx(avg)


def _metric_value(report: dict) -> float:
    """The chosen assignment's total in the front's display unit."""
    key = next(iter(report["front"][0]))
    convert = {"latency_ms": report["result"]["latency_ms"],
               "energy_mj": report["result"]["energy_mj"],
               "size_mb": report["result"]["weight_bytes"] / 1e6,
               "bits_bits": None}
    return convert[key]


def _check_front(report: dict, budget: str | None) -> None:
    front, chosen = report["front"], report["front"][report["chosen"]]
    key = next(iter(front[0]))
    costs = [p[key] for p in front]
    sens = [p["sensitivity"] for p in front]
    assert costs == sorted(costs)
    assert all(a > b for a, b in zip(sens, sens[1:])), "front must be strictly non-dominated"
    assert chosen["sensitivity"] == pytest.approx(report["sensitivity"], rel=1e-6)
    value = _metric_value(report)
    gap = [n for n in report["notes"] if PLAN_GAP_NOTE in n]
    if value is not None and gap:  # the note names the result's offset from its front point
        stated = float(re.search(r"is ([+-][0-9.]+)%", gap[0]).group(1)) / 100
        assert value / chosen[key] - 1 == pytest.approx(stated, abs=1e-5)
    elif value is not None:
        assert chosen[key] == pytest.approx(value, rel=1e-6)
    if budget == "bits=6":
        assert report["avg_weight_bits"] <= 6 + 1e-9
    elif budget == "size=0.05MB":
        assert report["result"]["weight_bytes"] <= 50_000
    else:
        assert "knee" in report["budget"]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "method", "budget"), RUNS)
def test_compile_example(tmp_path: Path, target: str, method: str, budget: str | None) -> None:
    out = tmp_path / "out"
    args = ["compile", "--example", "--target", target, "--method", method, "-o", str(out),
            "--json"]
    res = edgesim(*args, *(["--budget", budget] if budget else []))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)  # --json: only JSON on stdout (progress goes nowhere)
    assert report == json.loads((out / "report.json").read_text())
    _check_outputs(out, report, target)
    _check_totals(report)
    _check_front(report, budget)
    assert report["fidelity"]["accuracy"] >= report["fidelity"]["fp32_accuracy"] - 0.02


def test_progress_goes_to_stderr_and_quiet_silences_it(tmp_path: Path) -> None:
    res = edgesim("compile", "--example", "--method", "proxy", "-o", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    assert "[1/7]" in res.stderr and "[1/7]" not in res.stdout
    assert "predicted latency" in res.stdout
    quiet = edgesim("compile", "--example", "--method", "proxy", "--quiet",
                    "-o", str(tmp_path / "b"))
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_infeasible_budget_names_the_smallest_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    err = _one_line_error(edgesim("compile", "--example", "--method", "proxy", "--budget",
                                  "size=1kB", "-o", str(out)), "smallest feasible budget", "size=")
    assert "1kB" in err or "0.001MB" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unwritable_outdir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _one_line_error(edgesim("compile", "--example", "--method", "proxy", "-o",
                            str(blocker / "out")), str(blocker / "out"))


def test_unknown_target_lists_the_shipped_ones(tmp_path: Path) -> None:
    _one_line_error(edgesim("compile", "--example", "--target", "rpi9", "-o",
                            str(tmp_path / "o")), "rpi9", "rpi5", "cortex-m7")


def test_model_the_mcu_cannot_hold(tmp_path: Path) -> None:
    err = _one_line_error(edgesim("compile", "zoo:resnet18", "--target", "cortex-m7",
                                  "--method", "proxy", "-o", str(tmp_path / "o")),
                          "flash overflows by", "bytes")
    # resnet18: 11.69 M weights at 2 bits alone need ~2.9 MB; the STM32H743 has 2 MiB flash
    over = int(err.split("overflows by ")[1].split()[0])
    assert over > 11_000_000 * 2 // 8 - 2 * 1024 * 1024
    assert not (tmp_path / "o").exists()


@pytest.mark.ort
def test_one_float_pass_calibrates_and_gives_the_fidelity_reference(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """The quantising phase runs the float model once (ranges + reference outputs) and hands
    quantize_model the loaded graph and those statistics: nothing is loaded or calibrated
    twice."""
    import edgesim
    import edgesim.float_pass as fp
    import edgesim.quantize as eq
    from compiler.ir import Graph

    passes, quantized = [], []
    float_pass, quantize_model = eq.float_pass, eq.quantize_model

    def counted_pass(g, data, stats, **kw):
        passes.append(stats)
        return float_pass(g, data, stats, **kw)

    def recorded_quantize(model, *args, **kwargs):
        quantized.append((model, kwargs["stats"]))
        return quantize_model(model, *args, **kwargs)

    for module in (fp, eq):  # the pipeline's float pass and quantize_model's own
        monkeypatch.setattr(module, "float_pass", counted_pass)
    monkeypatch.setattr(eq, "quantize_model", recorded_quantize)
    d = zoo.load_digits_data()
    r = edgesim.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", method="proxy",
                        calib={"input": d["x_calib"][:24], "labels": d["y_calib"][:24]})
    assert passes == [True]
    ((model, stats),) = quantized
    assert isinstance(model, Graph) and stats is not None and stats.samples == 24
    assert r.fidelity["samples"] == 24 and r.fidelity["cosine"] > 0.99
    assert r.fidelity["fp32_accuracy"] is not None


@pytest.mark.ort
def test_hawq_forward_passes_serve_calibration_and_reference(tmp_path: Path,
                                                             monkeypatch) -> None:
    """When HAWQ's probes ran the float model over every calibration sample, those passes
    give the activation ranges and the fidelity reference: no float pass of its own."""
    import edgesim
    import edgesim.float_pass as fp
    import edgesim.quantize as eq

    quantized = []
    quantize_model = eq.quantize_model

    def recorded_quantize(model, *args, **kwargs):
        quantized.append(kwargs["stats"])
        return quantize_model(model, *args, **kwargs)

    for module in (fp, eq):  # the pipeline's float pass and quantize_model's own
        monkeypatch.setattr(module, "float_pass",
                            lambda *a, **k: pytest.fail("a float pass ran"))
    monkeypatch.setattr(eq, "quantize_model", recorded_quantize)
    d = zoo.load_digits_data()
    r = edgesim.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", method="hawq",
                        calib={"input": d["x_calib"][:24], "labels": d["y_calib"][:24]})
    (stats,) = quantized
    assert stats.samples == 24
    assert r.fidelity["samples"] == 24 and r.fidelity["cosine"] > 0.99
    assert r.fidelity["fp32_accuracy"] == pytest.approx(
        float(np.mean(np.argmax(_float_outputs(d["x_calib"][:24]), axis=1) == d["y_calib"][:24])))


def _float_outputs(x: np.ndarray) -> np.ndarray:
    """The float digits_cnn's outputs in onnxruntime."""
    import onnxruntime as ort

    sess = ort.InferenceSession(zoo.build("digits_cnn").SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def test_analysis_batch_keeps_activations_within_the_memory_bound(monkeypatch) -> None:
    """The bound is checked against the bytes the executor really keeps for one sample (every
    tensor of a forward pass, input included), not against the layer table it is computed
    from; a tiny model is capped by ANALYSIS_BATCH instead."""
    from compiler.executor import run
    from compiler.frontend import load
    from edgesim import analysis_inputs

    monkeypatch.setitem(analysis_inputs.ANALYSIS_BATCH, "lrp", 8)  # so that the memory bound binds
    g = load(zoo.build("mobilenet_v2", resolution=224), {"input": (1, 3, 224, 224)})
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    kept = sum(v.nbytes for k, v in run(g, {"input": x}, keep=True).items()
               if k not in g.weights)
    batch = analysis_inputs.analysis_batch(g, 32, "lrp")
    assert 1 < batch < 8
    assert batch * kept <= 1.05 * analysis_inputs.ANALYSIS_MEMORY
    assert (batch + 1) * kept > analysis_inputs.ANALYSIS_MEMORY  # and no smaller than it needs be
    digits = load(zoo.build("digits_cnn"), {"input": (1, 1, 8, 8)})
    assert analysis_inputs.analysis_batch(digits, 32, "lrp") == 8
    assert analysis_inputs.analysis_batch(digits, 3, "lrp") == 3
    assert (analysis_inputs.analysis_batch(digits, 32, "hawq")
            == analysis_inputs.ANALYSIS_BATCH["hawq"])


@pytest.mark.ort
def test_analysis_budget_bounds_hawq_and_the_report_says_so(tmp_path: Path,
                                                            monkeypatch) -> None:
    """A budget already used up before the first chunk still lets the first pass cover two
    chunks (the least for an error estimate): HAWQ probes 2 of the 24 samples once, the
    report names the cut and the precision reached, and the other 22 samples still run
    forward in HAWQ's pass, so the calibration has every sample without a float pass of
    its own."""
    import edgesim
    import edgesim.float_pass as fp
    import edgesim.quantize as eq
    from compiler.sensitivity import gauss_newton

    calls, passes = [], []
    real_samples, real_pass = gauss_newton.chunk_samples, eq.float_pass
    monkeypatch.setattr(gauss_newton, "chunk_samples",
                        lambda *a, **k: calls.append(a[5]) or real_samples(*a, **k))
    for module in (fp, eq):  # the pipeline's float pass and quantize_model's own
        monkeypatch.setattr(module, "float_pass",
                            lambda *a, **k: passes.append(1) or real_pass(*a, **k))
    d = zoo.load_digits_data()
    r = edgesim.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", method="hawq",
                        calib={"input": d["x_calib"][:24], "labels": d["y_calib"][:24]},
                        analysis_budget_s=1e-9)
    assert calls == [1, 1] and passes == []
    (note,) = [n for n in r.notes if n.startswith("hawq:")]
    assert "analysis budget 1e-09 CPU-s used up" in note and "iterations=1" in note
    assert float(note.split("max_rse=")[1].split(",")[0]) > 0.05
    assert r.fidelity["samples"] == 24


def test_analysis_budget_flag_is_checked(tmp_path: Path) -> None:
    res = edgesim("compile", "--example", "--analysis-budget", "soon", "-o", str(tmp_path / "o"))
    _one_line_error(res, "--analysis-budget", "soon")
