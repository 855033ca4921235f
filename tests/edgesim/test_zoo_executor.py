"""The reference executor reproduces onnxruntime on every zoo model and the trained models
(float32, rtol 1e-4, atol 1e-5 on all outputs), and `inspect` reproduces published figures."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.executor import run
from compiler.frontend import load
from compiler.verify import verify
from edgesim import api, zoo
from tests.compiler.opcheck import run_ort


def _feeds(graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        spec = graph.types[name]
        if np.dtype(spec.dtype).kind == "f":
            feeds[name] = rng.standard_normal(spec.shape).astype(spec.dtype)
        elif "mask" in name:  # attention mask: ones, with padding at the end of one row
            mask = np.ones(spec.shape, dtype=spec.dtype)
            mask[0, spec.shape[1] * 3 // 4:] = 0
            feeds[name] = mask
        else:  # token ids: small enough for every embedding table
            feeds[name] = rng.integers(0, 100, spec.shape).astype(spec.dtype)
    return feeds


ARCHITECTURES = ["mobilenet_v2", "resnet18", "resnet50", "vit_tiny", "minilm", "llama"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_executor_matches_onnxruntime_on_zoo(name: str) -> None:
    model = zoo.build(name)
    graph = load(model)
    verify(graph)
    feeds = _feeds(graph)
    ours = run(graph, feeds)
    refs = run_ort(model, feeds)
    assert len(refs) == len(graph.outputs)
    for out, ref in zip(graph.outputs, refs):
        assert ours[out].shape == ref.shape, out
        np.testing.assert_allclose(ours[out], ref, rtol=1e-4, atol=1e-5, err_msg=f"{name}:{out}")


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer"])
def test_executor_matches_onnxruntime_on_trained_models(name: str) -> None:
    model = zoo.build(name)
    x = zoo.load_digits_data()["x_test"]
    graph = load(model, {"input": x.shape})  # the whole test split as one batch
    verify(graph)
    (out,) = graph.outputs
    ours = run(graph, {graph.inputs[0]: x})[out]
    (ref,) = run_ort(model, {graph.inputs[0]: x})
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


# Published figures, independent of edgesim: He et al. 2016 / torchvision model card for
# ResNet-50 (4.1 GMACs, 25.6 M params at 224x224), Sandler et al. 2018 for MobileNetV2
# (300 M MACs, 3.4-3.5 M params at 224x224, width 1.0).
@pytest.mark.parametrize(("name", "gmacs", "mac_tol", "mparams", "param_tol"), [
    ("resnet50", 4.1, 0.02, 25.6, 0.01),
    ("mobilenet_v2", 0.30, 0.05, 3.5, 0.03),
])
def test_inspect_reproduces_published_figures(name, gmacs, mac_tol, mparams, param_tol) -> None:
    r = api.inspect(f"zoo:{name}")
    assert r.total_macs / 1e9 == pytest.approx(gmacs, rel=mac_tol)
    assert r.total_params / 1e6 == pytest.approx(mparams, rel=param_tol)
