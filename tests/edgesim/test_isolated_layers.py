"""The own-layer error check's quantised outputs from onnxruntime (`edgesim.quantize.
_isolated_runner` over `compiler.layer_graph.isolated_layers`) are the numpy fake-quant
rules' outputs: bit for bit at W8A8 (integer kernels, exact accumulation), to float rounding
for weight-only formats (float GEMMs); and the SQNR figures built on them agree."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from compiler import fake_quant
from compiler.ir import Graph
from compiler.layer_error import layer_sqnr, measured
from compiler.layer_graph import isolated_layers
from compiler.passes.quantize import QuantOptions, quantize
from edgesim import assignment, zoo
from edgesim import calibration as cal
from edgesim.float_pass import float_pass, onnxruntime_env
from edgesim.loading import load_graph
from edgesim.quantize import _isolated_runner

MODELS = {"digits_cnn": lambda: load_graph("zoo:digits_cnn"),
          "digits_transformer": lambda: load_graph("zoo:digits_transformer"),
          # random weights; project convs feed the next block's expand conv directly, so a
          # quantised layer reads another quantised layer's output
          "mobilenet_v2_32": lambda: load_graph(zoo.build("mobilenet_v2", num_classes=10,
                                                          resolution=32))}


def _quantised(name: str, bits: int) -> tuple[Graph, Graph, cal.CalibrationData]:
    g = MODELS[name]()
    data = cal.random_samples(g, 4, seed=3)
    stats = float_pass(g, data, stats=True).stats
    return g, quantize(g, assignment.resolve(g, bits), stats, QuantOptions()), data


@pytest.mark.parametrize("name,bits", [("digits_cnn", 8), ("digits_transformer", 8),
                                       ("mobilenet_v2_32", 8), ("digits_cnn", 4),
                                       ("digits_transformer", 4)])
def test_isolated_layers_in_onnxruntime_compute_the_fake_quant_outputs(name: str,
                                                                       bits: int) -> None:
    g, qg, data = _quantised(name, bits)
    run, env_of = _isolated_runner(qg), onnxruntime_env(g)
    assert run is not None and env_of is not None
    feeds = next(cal.batches(g, data))
    env = {**qg.weights, **env_of(feeds)}
    got = run(env)
    layers = [layer for layer in qg.layers if measured(layer)]
    assert len(layers) >= 2 and set(got) == {layer.outputs[0] for layer in layers}
    for layer in layers:
        want = fake_quant.forward(layer, env)[0]
        assert np.abs(want).max() > 0
        if bits == 8:
            np.testing.assert_array_equal(got[layer.outputs[0]], want, err_msg=layer.name)
        else:
            np.testing.assert_allclose(got[layer.outputs[0]], want, rtol=1e-5,
                                       atol=1e-5 * np.abs(want).max(), err_msg=layer.name)


def test_a_quantised_layer_reading_another_reads_the_float_tensor() -> None:
    _, qg, _ = _quantised("mobilenet_v2_32", 8)
    lg = isolated_layers(qg, measured)
    assert lg is not None
    produced = {t for layer in lg.layers for t in layer.outputs}
    chained = [t for t in lg.inputs if any(t in layer.outputs for layer in qg.layers
                                           if measured(layer))]
    assert chained and not produced & set(lg.inputs)  # fed, not computed in the graph


@pytest.mark.parametrize("name,bits", [("digits_cnn", 4), ("mobilenet_v2_32", 8)])
def test_layer_sqnr_figures_are_the_numpy_rules_figures(name: str, bits: int) -> None:
    g, qg, data = _quantised(name, bits)
    batches = list(itertools.islice(cal.batches(g, data), 2))
    want = layer_sqnr(qg, batches, g, onnxruntime_env(g))
    got = layer_sqnr(qg, batches, g, onnxruntime_env(g), _isolated_runner(qg))
    finite = [k for k in want if np.isfinite(want[k])]
    assert set(got) == set(want) and len(finite) >= 3
    assert min(want[k] for k in finite) < 40  # real errors, which a wrong tensor would move
    np.testing.assert_allclose([got[k] for k in finite], [want[k] for k in finite], atol=1e-4)


@pytest.mark.parametrize("name", ["digits_cnn", "mobilenet_v2_32"])
def test_the_shared_float_session_computes_the_calibration_session_tensors(name: str) -> None:
    from compiler.passes.calibrate import calibration_tensors
    from edgesim.float_pass import _onnxruntime_forward

    g = MODELS[name]()
    keep = tuple(calibration_tensors(g))
    forward, env = _onnxruntime_forward(g, keep, []), onnxruntime_env(g, threads=None)
    assert env is not None and len(keep) >= 3
    for feeds in itertools.islice(cal.batches(g, cal.random_samples(g, 2, seed=5)), 2):
        want, got = forward(feeds, keep), env(feeds)
        for t in keep:
            np.testing.assert_array_equal(got[t], want[t], err_msg=t)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_the_range_search_picks_the_same_ranges_on_the_shared_session(name: str) -> None:
    from edgesim.ranges import chosen_ranges

    g = MODELS[name]()
    data = cal.random_samples(g, 24, seed=7)
    ref = float_pass(g, data, stats=True)
    assign, opts = assignment.resolve(g, 8), QuantOptions(act_method="auto")
    want, _ = chosen_ranges(g, assign, data, ref.stats, opts, ref.fit_stats)
    got, _ = chosen_ranges(g, assign, data, ref.stats, opts, ref.fit_stats, None,
                            lambda: onnxruntime_env(g, threads=None))
    assert want is not None and got is not None and want.chosen
    assert dict(got.chosen) == dict(want.chosen)
    assert dict(got.resolved) == dict(want.resolved)
