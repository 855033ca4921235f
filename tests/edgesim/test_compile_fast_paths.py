"""The compile's fast paths give what the plain paths give: onnxruntime sessions that park
their threads (no spinning) compute the same outputs bit for bit, and the histogram with
interleaved counter rows counts what numpy's histogram counts, for every length's tail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.activation_quant import range_stats
from compiler.emit import emit
from compiler.passes.calibrate import calibrate
from edgesim import calibration as cal
from edgesim.evaluate import session
from edgesim.float_pass import E2E_SAMPLES, _onnxruntime_forward, float_pass
from edgesim.loading import load_graph
from edgesim.quantize import quantize_model


def test_a_session_without_spinning_computes_what_the_default_session_does() -> None:
    g = load_graph("zoo:digits_cnn")
    model = emit(g, check=False)
    feeds = next(cal.batches(g, cal.random_samples(g, 4, seed=1)))
    plain, parked = session(model), session(model, threads=2, spin=False)
    names = [o.name for o in plain.get_outputs()]
    for want, got in zip(plain.run(names, feeds), parked.run(names, feeds)):
        assert np.abs(want).max() > 0  # a real output, not zeros on both sides
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", range(1, 10))
def test_histogram_counts_every_value_whatever_the_length(n: int) -> None:
    # runs of one value (a ReLU's zeros) and a tail of 1-3 values past the 4-wide rows
    x = np.concatenate([np.zeros(n, np.float32), np.linspace(-3, 5, n, dtype=np.float32)])
    stats = range_stats(x, 64)
    edges = np.linspace(-stats.half_range, stats.half_range, 65)  # powers of two: exact
    np.testing.assert_array_equal(stats.hist, np.histogram(x, bins=edges)[0])
    assert stats.hist.sum() == x.size


def _same_stats(a, b) -> None:
    assert set(a.stats) == set(b.stats) and a.samples == b.samples
    for t, s in a.stats.items():
        o = b.stats[t]
        assert (s.count, s.min, s.max, s.half_range) == (o.count, o.min, o.max, o.half_range), t
        np.testing.assert_array_equal(s.hist, o.hist, err_msg=t)


def test_the_float_pass_collects_the_fit_part_as_a_pass_over_it_alone_does() -> None:
    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 32, seed=2)
    got = float_pass(g, data, stats=True)
    assert got.fit_stats is not None and got.stats is not None
    fit, _ = cal.split(data, E2E_SAMPLES)
    alone = calibrate(g, cal.batches(g, fit), tensors=tuple(got.stats.stats),
                      forward=_onnxruntime_forward(g, tuple(got.stats.stats), []))
    assert alone.samples == 16 and len(alone.stats) > 3
    _same_stats(got.fit_stats, alone)
    # and the whole pass is what it was: one collector over every sample
    whole = calibrate(g, cal.batches(g, data), tensors=tuple(got.stats.stats),
                      forward=_onnxruntime_forward(g, tuple(got.stats.stats), []))
    _same_stats(got.stats, whole)


def test_quantize_with_the_collected_fit_part_writes_the_same_file_with_no_pass(
        tmp_path, monkeypatch) -> None:
    import edgesim.ranges as q

    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 32, seed=4)
    ref = float_pass(g, data, stats=True)
    passes: list[int] = []
    monkeypatch.setattr(q, "calibrate", lambda *a, **k: passes.append(1) or calibrate(*a, **k))
    files, counts = [], []
    for name, fit in (("plain", None), ("fast", ref.fit_stats)):
        out = tmp_path / f"{name}.onnx"
        quantize_model(g, 8, calib=data, out=out, stats=ref.stats, fit_stats=fit,
                       kernel_check="off")
        files.append(out.read_bytes())
        counts.append(len(passes))
    assert counts == [1, 1]  # the plain path's own pass over the fit part; none in the fast
    assert files[0] == files[1]


def test_a_hawq_compile_reuses_its_recorded_passes_and_writes_the_same_model(
        tmp_path, monkeypatch) -> None:
    import edgesim.float_pass as float_pass_module
    import edgesim.ranges as q
    from edgesim.pipeline import CompileOptions, compile_model

    g = load_graph("zoo:digits_cnn")
    data = dict(cal.random_samples(g, 32, seed=7).samples)
    passes: list[int] = []
    monkeypatch.setattr(q, "calibrate", lambda *a, **k: passes.append(1) or calibrate(*a, **k))
    opts = CompileOptions(quiet=True, act_bits=(8,), kernel_check="off")
    fast = compile_model("zoo:digits_cnn", "rpi5", tmp_path / "fast", calib=data,
                         options=opts)
    fast_passes = len(passes)
    monkeypatch.setattr(float_pass_module, "fit_batches", lambda g, data: None)  # the path before
    plain = compile_model("zoo:digits_cnn", "rpi5", tmp_path / "plain", calib=data,
                          options=opts)
    assert (fast_passes, len(passes) - fast_passes) == (0, 1)
    assert fast.avg_weight_bits == plain.avg_weight_bits
    assert Path(fast.files["model"]).read_bytes() == Path(plain.files["model"]).read_bytes()


def test_own_layer_sqnr_from_onnxruntime_tensors_matches_the_executor() -> None:
    import itertools

    from compiler.layer_error import layer_sqnr
    from compiler.passes.quantize import QuantOptions, quantize
    from edgesim import assignment
    from edgesim.float_pass import onnxruntime_env

    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 2, seed=8)
    stats = float_pass(g, data, stats=True).stats
    qg = quantize(g, assignment.resolve(g, 4), stats, QuantOptions())  # W4: real errors
    batches = list(itertools.islice(cal.batches(g, data), 2))
    want = layer_sqnr(qg, batches, g)
    got = layer_sqnr(qg, batches, g, onnxruntime_env(g))
    assert set(got) == set(want) and len(want) >= 3
    finite = [k for k in want if np.isfinite(want[k])]
    assert min(want[k] for k in finite) < 40  # errors a wrong tensor would move
    np.testing.assert_allclose([got[k] for k in finite], [want[k] for k in finite], atol=0.01)
