"""Calibration data (files and random samples), and `quantize_model`'s handling of bad input:
one clear error naming the file/key/layer, and nothing written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from compiler.frontend import load
from edgesim import calibration as cal
from edgesim import zoo
from edgesim.errors import UserError
from edgesim.quantize import quantize_model


@pytest.fixture(scope="module")
def digits() -> tuple:
    return zoo.build("digits_cnn"), zoo.load_digits_data()


def _save(tmp_path, **arrays) -> str:
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    return str(path)


BAD = {
    "missing key": (dict(other=np.zeros((2, 1, 8, 8), np.float32)), "missing \\['input'\\]"),
    "unknown key": (dict(input=np.zeros((2, 1, 8, 8), np.float32),
                         extra=np.zeros(2, np.float32)), "unknown \\['extra'\\]"),
    "wrong shape": (dict(input=np.zeros((2, 1, 8, 7), np.float32)), "input: shape"),
    "no samples": (dict(input=np.zeros((0, 1, 8, 8), np.float32)), "input: shape"),
    "wrong dtype": (dict(input=np.zeros((2, 1, 8, 8), np.int64)), "input: dtype int64"),
    "nan": (dict(input=np.full((2, 1, 8, 8), np.nan, np.float32)), "input: holds NaN"),
    "inf": (dict(input=np.full((2, 1, 8, 8), np.inf, np.float32)), "input: holds NaN"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_calibration_file(tmp_path, digits, case: str) -> None:
    arrays, message = BAD[case]
    path = _save(tmp_path, **arrays)
    out = tmp_path / "out.onnx"
    with pytest.raises(UserError, match=message) as e:
        quantize_model(digits[0], 8, calib=path, out=out)
    assert str(tmp_path / "calib.npz") in str(e.value)  # names the file
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz"]


def test_unreadable_and_missing_files(tmp_path, digits) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="junk.npz"):
        cal.read(load(digits[0]), junk)
    with pytest.raises(UserError, match="no such calibration file"):
        cal.read(load(digits[0]), tmp_path / "absent.npz")


def test_bad_bits_and_unknown_layers_write_nothing(tmp_path, digits) -> None:
    out = tmp_path / "out.onnx"
    with pytest.raises(UserError, match="--bits"):
        quantize_model(digits[0], 9, out=out)
    spec = tmp_path / "bits.json"
    spec.write_text(json.dumps({"conv1/Conv": 4, "no_such_layer": 4}))
    with pytest.raises(UserError, match="unknown layer.*no_such_layer"):
        quantize_model(digits[0], str(spec), out=out)
    with pytest.raises(UserError, match="array shape"):
        quantize_model(digits[0], np.full((3, 2), 8), out=out)
    with pytest.raises(UserError, match="conv1/Conv.*bits \\(8, 5\\)"):
        quantize_model(digits[0], {"conv1/Conv": [8, 5]}, out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bits.json"]


@pytest.mark.ort  # calibration runs the float model in onnxruntime
def test_file_calibration_end_to_end(tmp_path, digits) -> None:
    model, d = digits
    path = _save(tmp_path, input=d["x_calib"][:40])
    r = quantize_model(model, 8, calib=path, out=tmp_path / "q.onnx")
    assert r.calibration == f"{path} (40 samples)" and not r.calibration_random
    assert onnx.load(r.out).graph.node  # written and loadable
    kinds = {lay.name: (lay.format, lay.w_bits, lay.a_bits) for lay in r.layers}
    assert kinds == {f"conv{i}/Conv": ("qdq", 8, 8) for i in (1, 2, 3)} | {
        "fc/Gemm": ("qdq", 8, 8)}
    assert r.expected_bytes < r.fp32_bytes / 3


@pytest.mark.ort  # calibration runs the float model in onnxruntime
def test_random_calibration_is_reported(tmp_path, digits) -> None:
    r = quantize_model(digits[0], 8, out=tmp_path / "q.onnx")
    assert r.calibration_random and "random" in r.calibration
    w4 = quantize_model(digits[0], 4, out=tmp_path / "q4.onnx")
    assert w4.calibration == "" and not w4.calibration_random  # weight-only: none needed


def test_random_samples_respect_index_ranges() -> None:
    g = load(zoo.build("minilm", seq=8, depth=1, vocab=50))
    data = cal.random_samples(g, 5, seed=3)
    ids, mask = data.samples["input_ids"], data.samples["attention_mask"]
    assert ids.shape == (5, 8) and ids.dtype == np.int64 and 0 <= ids.min() and ids.max() < 50
    assert np.all(mask == 1)
    assert data.random and "5 random samples" in data.source
    with pytest.raises(UserError, match="at least 1"):
        cal.random_samples(g, 0)


def test_batches_cover_the_samples() -> None:
    g = load(zoo.build("digits_cnn"), {"input": (4, 1, 8, 8)})
    data = cal.CalibrationData({"input": np.arange(10 * 64, dtype=np.float32)
                                .reshape(10, 1, 8, 8)}, "t")
    batches = list(cal.batches(g, data))
    assert [b["input"].shape[0] for b in batches] == [4, 4]  # the last 2 do not fill a batch
    np.testing.assert_array_equal(batches[1]["input"], data.samples["input"][4:8])


@pytest.mark.ort  # calibration runs the float model in onnxruntime
def test_float_pass_matches_the_reference_executor(digits) -> None:
    """onnxruntime's run of the emitted float model gives the executor's ranges and outputs to
    float rounding: same counts, min/max within 1e-5, histograms differing by a few values
    that sit on bin edges at most."""
    from compiler.executor import run
    from compiler.passes.calibrate import calibrate
    from edgesim.float_pass import float_pass

    g = load(digits[0], {"input": (4, 1, 8, 8)})
    data, _ = cal.from_arrays(g, {"input": digits[1]["x_calib"][:22]}, "t")  # 2 left over
    got = float_pass(g, data, stats=True)
    ref = calibrate(g, cal.batches(g, data), source=data.source)
    assert got.stats.samples == ref.samples == 20 and got.stats.source == data.source
    assert set(got.stats.stats) == set(ref.stats)
    for t, s in got.stats.stats.items():
        r = ref.stats[t]
        assert s.count == r.count and s.half_range == r.half_range
        assert s.min == pytest.approx(r.min, rel=1e-5, abs=1e-6)
        assert s.max == pytest.approx(r.max, rel=1e-5, abs=1e-6)
        assert np.abs(s.hist - r.hist).sum() <= 2e-4 * s.count + 2
    expect = np.concatenate([run(g, f)[g.outputs[0]] for f in cal.batches(g, data)])
    np.testing.assert_allclose(got.outputs, expect, rtol=1e-4, atol=1e-4)
    assert float_pass(g, data, stats=False).stats is None


@pytest.mark.ort  # the reference is onnxruntime's float pass
def test_recorded_hawq_forward_passes_give_the_float_pass(digits) -> None:
    """HAWQ's forward passes over the calibration samples, recorded, give what onnxruntime's
    float pass gives (ranges and outputs, to float rounding); a record of part of the data
    gives nothing."""
    from compiler.sensitivity import hawq
    from edgesim.float_pass import FloatPassRecorder, float_pass

    g = load(digits[0])
    data, _ = cal.from_arrays(g, {"input": digits[1]["x_calib"][:12]}, "t")
    recorder = FloatPassRecorder(g)
    hawq.sensitivity(g, data.samples, observe=recorder, max_iter=2)
    got, want = recorder.result(data), float_pass(g, data, stats=True)
    assert got.stats.samples == 12 and got.stats.source == want.stats.source
    assert set(got.stats.stats) == set(want.stats.stats)
    for t, s in got.stats.stats.items():
        r = want.stats.stats[t]
        assert s.count == r.count and s.half_range == r.half_range
        assert s.min == pytest.approx(r.min, rel=1e-5, abs=1e-6)
        assert s.max == pytest.approx(r.max, rel=1e-5, abs=1e-6)
        assert np.abs(s.hist - r.hist).sum() <= 2e-4 * s.count + 2
    np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-4, atol=1e-4)
    more, _ = cal.from_arrays(g, {"input": digits[1]["x_calib"][:13]}, "t")
    assert recorder.result(more) is None


@pytest.mark.ort  # calibration runs the float model in onnxruntime
def test_quantize_model_uses_given_statistics_and_graph(tmp_path, digits, monkeypatch) -> None:
    """With a loaded graph and statistics, quantize_model neither loads nor calibrates again,
    and writes what it writes when it calibrates itself."""
    import edgesim.quantize as eq

    g = load(digits[0])
    data, _ = cal.from_arrays(g, {"input": digits[1]["x_calib"][:16]}, "t")
    own = quantize_model(g, 8, calib=data, out=tmp_path / "own.onnx")
    stats = eq.float_pass(g, data, stats=True).stats
    monkeypatch.setattr(eq, "float_pass", lambda *a, **k: pytest.fail("calibrated again"))
    given = quantize_model(g, 8, calib=data, out=tmp_path / "given.onnx", stats=stats)
    assert given.calibration == own.calibration == "t (16 samples)"
    assert (tmp_path / "given.onnx").read_bytes() == (tmp_path / "own.onnx").read_bytes()


@pytest.mark.ort  # calibration runs the float model in onnxruntime
def test_float_pass_collects_a_calibration_tensor_that_is_a_later_graph_output() -> None:
    from onnx import TensorProto, helper

    from compiler.passes.calibrate import calibrate
    from edgesim.float_pass import float_pass
    from tests.compiler.test_calibrate import _conv_relu_gemm

    model = _conv_relu_gemm(1)
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5]))
    g = load(model)
    assert g.outputs == ("out", "y")
    x = np.random.default_rng(5).standard_normal((3, 3, 6, 6)).astype(np.float32)
    data = cal.CalibrationData({"x": x}, "t")
    got = float_pass(g, data, stats=True)
    ref = calibrate(g, cal.batches(g, data))
    assert got.stats.stats["y"].max == pytest.approx(ref.stats["y"].max, rel=1e-5)
    assert got.outputs.shape == (3, 5)
