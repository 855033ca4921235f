"""The analysis's forward passes in onnxruntime (`edgesim.float_pass.onnxruntime_env`) stand in
for the reference executor: the same tensors to float32 rounding, hence the same HAWQ traces
and SmoothQuant channel maxima."""

from __future__ import annotations

import numpy as np

from compiler.executor import run
from compiler.frontend import load
from compiler.passes.smooth_quant import channel_absmax, sites
from compiler.sensitivity import hawq
from compiler.sensitivity.loss import chunks
from edgesim import zoo
from edgesim.float_pass import onnxruntime_env


def _transformer():
    data = zoo.load_digits_data()
    g = load(zoo.build("digits_transformer"), {"input": (1, 1, 8, 8)})
    return g, data["x_calib"][:8].astype(np.float32)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal to float32 rounding of sums: relative to the tensor's largest magnitude."""
    scale = max(float(np.abs(a).max(initial=0.0)), 1e-30)
    return a.shape == b.shape and a.dtype == b.dtype and \
        float(np.abs(a - b).max(initial=0.0)) <= 1e-4 * scale


def test_every_tensor_matches_the_executor() -> None:
    g, x = _transformer()
    forward = onnxruntime_env(g)
    assert forward is not None
    feeds = {"input": x[:1]}
    ref, got = run(g, feeds, dtype="float32", keep=True), forward(feeds)
    assert set(ref) <= set(got)
    bad = [t for t in ref if not _close(ref[t], np.asarray(got[t]))]
    assert not bad


def test_hawq_traces_from_onnxruntime_forwards_equal_the_executors() -> None:
    """The same probes (same seed) on forward passes equal to rounding: traces agree far
    inside the estimator's own 5 % error."""
    g, x = _transformer()
    forward = onnxruntime_env(g)
    ref = hawq.sensitivity(g, x, max_iter=2)
    got = hawq.sensitivity(g, x, max_iter=2, forward=forward)
    assert got.iterations == ref.iterations
    np.testing.assert_allclose(got.score, ref.score, rtol=1e-3)


def test_kept_tensors_only_and_smoothquant_maxima_agree() -> None:
    g, x = _transformer()
    outs = [g.layer(name).outputs[0] for name in sites(g)]
    assert outs  # the transformer has SmoothQuant sites (LayerNorm -> linear)
    forward = onnxruntime_env(g, outs)
    assert forward is not None
    got = forward({"input": x[:1]})
    assert set(outs) <= set(got) and not set(got) & {t for la in g.layers for t in la.outputs
                                                     if t not in outs and t not in g.outputs}
    batches = [c for c in chunks(g, x)]
    ref = channel_absmax(g, batches)
    fast = channel_absmax(g, batches, forward)
    for name in ref:
        np.testing.assert_allclose(fast[name], ref[name], rtol=1e-4)


def test_wanted_tensors_are_fetched_alone_and_bit_for_bit() -> None:
    """Asking for some tensors runs the same optimised graph: the same values, bit for bit,
    as fetching every tensor, and no other layer output is returned (memory)."""
    g, x = _transformer()
    forward = onnxruntime_env(g)
    assert forward is not None
    feeds = {"input": x[:1]}
    produced = [t for la in g.layers for t in la.outputs if t]
    wanted = produced[1::3]
    every, some = forward(feeds), forward(feeds, wanted)
    assert set(some) & set(produced) == set(wanted)
    for t in wanted:
        assert np.array_equal(some[t], every[t]), t


def test_quantize_fetches_only_what_it_reads_and_emits_the_same_bytes(tmp_path) -> None:
    """The range search and the own-layer check ask the shared float session for the
    tensors they read; the model they choose is byte for byte the one chosen from every
    tensor (what they fetched before)."""
    import pytest

    import edgesim.quantize as q

    calls: list[object] = []
    original = q.onnxruntime_env

    def fetch_all(*args, **kwargs):  # type: ignore[no-untyped-def]
        env = original(*args, **kwargs)
        return None if env is None else (lambda feeds, wanted=None: env(feeds))

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        env = original(*args, **kwargs)

        def forward(feeds, wanted=None):  # type: ignore[no-untyped-def]
            calls.append(wanted)
            return env(feeds, wanted)
        return forward

    model, calib = zoo.build("digits_cnn"), tmp_path / "calib.npz"
    np.savez(calib, input=zoo.load_digits_data()["x_calib"][:16].astype(np.float32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(q, "onnxruntime_env", fetch_all)
        q.quantize_model(model, 8, calib=str(calib), out=tmp_path / "all.onnx")
        mp.setattr(q, "onnxruntime_env", recording)
        q.quantize_model(model, 8, calib=str(calib), out=tmp_path / "some.onnx")
    assert calls and all(w is not None for w in calls)
    assert (tmp_path / "all.onnx").read_bytes() == (tmp_path / "some.onnx").read_bytes()
