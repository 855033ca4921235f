"""The zoo against independent oracles: onnx.checker and shape inference, onnxruntime, the
published parameter and MAC counts of each architecture, numpy closed forms, and the shipped
trained models' accuracy on the shipped test split."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from compiler.errors import ModelError
from edgesim import zoo
from edgesim.zoo import cnn, trained, transformer
from edgesim.zoo.cnn import GraphBuilder

pytestmark = pytest.mark.ort
B = 2  # batch fed to every model; the graphs declare it symbolic

# Output shapes from each architecture's definition (batch first).
OUTPUTS = {
    "mobilenet_v2": {"logits": (B, 1000)},
    "resnet18": {"logits": (B, 1000)},
    "resnet50": {"logits": (B, 1000)},
    "vit_tiny": {"logits": (B, 1000)},
    "minilm": {"last_hidden_state": (B, 128, 384), "pooler_output": (B, 384)},
    "llama": {"logits": (B, 128, 32000)},
    "digits_cnn": {"logits": (B, 10)},
    "digits_transformer": {"logits": (B, 10)},
}
# Published parameter counts (torchvision, DeiT, sentence-transformers) and tolerances.
PARAMS = {"resnet50": (25.56e6, 0.01), "resnet18": (11.69e6, 0.01),
          "mobilenet_v2": (3.50e6, 0.01), "vit_tiny": (5.7e6, 0.02), "minilm": (22.7e6, 0.02)}
# Published MACs at 224x224 (torchvision / fvcore for DeiT-Tiny) and tolerances.
MACS = {"resnet50": (4.1e9, 0.02), "mobilenet_v2": (0.30e9, 0.05), "resnet18": (1.82e9, 0.02),
        "vit_tiny": (1.26e9, 0.02)}
ACCURACY_BARS = {"digits_cnn": 0.97, "digits_transformer": 0.93}


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    return {}


def model_of(built: dict, name: str) -> onnx.ModelProto:
    if name not in built:  # each model is built once per module
        built[name] = zoo.build(name)
    return built[name]


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def session_of(built: dict, name: str) -> ort.InferenceSession:
    if ("session", name) not in built:  # and loaded into onnxruntime once
        built["session", name] = session(model_of(built, name))
    return built["session", name]


def random_feed(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feed = {}
    for inp in model.graph.input:
        shape = [B, *(d.dim_value for d in inp.type.tensor_type.shape.dim[1:])]
        if inp.name == "attention_mask":  # second sequence padded after 100 tokens
            feed[inp.name] = (np.arange(shape[1]) < np.array([[shape[1]], [100]])).astype(np.int64)
        elif inp.type.tensor_type.elem_type == TensorProto.INT64:
            feed[inp.name] = rng.integers(0, 1000, shape)
        else:
            feed[inp.name] = rng.uniform(0, 1, shape).astype(np.float32)
    return feed


def param_count(model: onnx.ModelProto) -> int:
    """Float initializer elements, less BN running statistics and scalar constants."""
    stats = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization"
             for i in (3, 4)}
    return sum(math.prod(t.dims) for t in model.graph.initializer
               if t.data_type == TensorProto.FLOAT and t.dims and t.name not in stats)


def _conv_macs(out: list[int], ins: list[list[int]]) -> int:
    return math.prod(out[1:]) * math.prod(ins[1][1:])  # Cout*H*W * Cin/g*kh*kw


def _matmul_macs(out: list[int], ins: list[list[int]]) -> int:
    return math.prod(out) * ins[0][-1]  # every output element sums K products


MAC_RULES = {"Conv": _conv_macs, "Gemm": _matmul_macs, "MatMul": _matmul_macs}


def count_macs(model: onnx.ModelProto) -> int:
    """MACs of one sample, from ONNX shape inference with the batch fixed to 1."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        inp.type.tensor_type.shape.dim[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*m.graph.value_info, *m.graph.output, *m.graph.input)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    return sum(MAC_RULES[n.op_type](shapes[n.output[0]], [shapes[i] for i in n.input])
               for n in m.graph.node if n.op_type in MAC_RULES)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_model_is_valid_and_runs_in_onnxruntime(built, name):
    model = model_of(built, name)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "N" for i in model.graph.input)
    sess = session_of(built, name)
    outs = sess.run(None, random_feed(model, np.random.default_rng(0)))
    names = [o.name for o in sess.get_outputs()]
    assert {n: o.shape for n, o in zip(names, outs)} == OUTPUTS[name]
    assert all(np.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_published(built, name):
    published, tol = PARAMS[name]
    assert param_count(model_of(built, name)) == pytest.approx(published, rel=tol)


@pytest.mark.parametrize("name", sorted(MACS))
def test_macs_match_published(built, name):
    published, tol = MACS[name]
    assert count_macs(model_of(built, name)) == pytest.approx(published, rel=tol)


def test_activations_stay_order_one(built):
    # random-weight nets are used for quantisation studies: logits must be neither ~0 nor huge
    x = np.random.default_rng(1).normal(size=(1, 3, 224, 224)).astype(np.float32)
    std = session_of(built, "resnet50").run(None, {"input": x})[0].std()
    assert 0.1 < std < 10


def test_llama_is_causal(built):
    # changing token 64 may change logits at positions >= 64 only
    ids = np.random.default_rng(2).integers(0, 32000, (1, 128))
    other = ids.copy()
    other[0, 64] = (ids[0, 64] + 1) % 32000
    out = session_of(built, "llama").run(None, {"input_ids": np.concatenate([ids, other])})[0]
    np.testing.assert_allclose(out[0, :64], out[1, :64], rtol=1e-4, atol=1e-4)
    assert np.abs(out[0, 64:] - out[1, 64:]).max() > 1e-2


def test_minilm_ignores_masked_tokens(built):
    ids = np.random.default_rng(3).integers(0, 30522, (1, 128))
    other = ids.copy()
    other[0, 100:] = 7  # only padded-out positions differ
    mask = np.broadcast_to((np.arange(128) < 100).astype(np.int64), (2, 128))
    hidden, _ = session_of(built, "minilm").run(
        None, {"input_ids": np.concatenate([ids, other]), "attention_mask": mask})
    np.testing.assert_allclose(hidden[0, :100], hidden[1, :100], rtol=1e-4, atol=1e-4)


def test_exporter_patterns(built):
    ops = {name: {n.op_type for n in model_of(built, name).graph.node}
           for name in ("resnet18", "mobilenet_v2", "vit_tiny", "minilm", "llama")}
    assert {"BatchNormalization", "MaxPool", "Add", "GlobalAveragePool", "Gemm"} <= ops["resnet18"]
    assert "Clip" in ops["mobilenet_v2"]
    assert {"LayerNormalization", "Erf", "Softmax", "Concat"} <= ops["vit_tiny"]
    assert "LayerNormalization" not in ops["minilm"]
    assert {"ReduceMean", "Pow", "Sqrt", "Div", "Erf", "Cast", "Unsqueeze"} <= ops["minilm"]
    assert {"Reciprocal", "Sigmoid", "Neg", "Slice", "Concat", "Gather"} <= ops["llama"]


@pytest.mark.parametrize("name", sorted(ACCURACY_BARS))
def test_trained_model_meets_accuracy_bar(name):
    data = trained.load_digits_data()
    logits = session(zoo.build(name)).run(None, {"input": data["x_test"]})[0]
    assert (logits.argmax(1) == data["y_test"]).mean() >= ACCURACY_BARS[name]


def test_trained_cnn_keeps_batchnorm():
    assert sum(n.op_type == "BatchNormalization" for n in zoo.build("digits_cnn").graph.node) == 3


def test_digits_data_shapes_and_ranges():
    data = trained.load_digits_data()
    assert data["x_calib"].shape == (200, 1, 8, 8) and data["x_test"].shape == (360, 1, 8, 8)
    assert data["x_test"].dtype == np.float32 and data["y_test"].shape == (360,)
    assert 0 <= data["x_test"].min() and data["x_test"].max() <= 1
    assert set(np.unique(data["y_test"])) == set(range(10))


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="resnet50") as err:
        zoo.build("resnet51")
    assert isinstance(err.value, ModelError)


def test_zoo_names():
    assert set(zoo.ZOO) == set(OUTPUTS)


def test_seed_decides_weights():
    def weights(seed: int) -> np.ndarray:
        model = cnn.mobilenet_v2(num_classes=10, resolution=32, seed=seed)
        return onnx.numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_array_equal(weights(0), weights(0))
    assert not np.array_equal(weights(0), weights(1))


def test_given_weights_replace_random_ones():
    model = cnn.resnet18(num_classes=10, resolution=32, weights={"fc.bias": np.arange(10.0)})
    bias = next(t for t in model.graph.initializer if t.name == "fc.bias")
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(bias), np.arange(10.0))


@pytest.mark.parametrize("weights", [{"fc.bias": np.zeros(3)}, {"no.such.weight": np.zeros(3)}])
def test_bad_weights_are_model_errors(weights):
    with pytest.raises(ModelError):
        cnn.resnet18(num_classes=10, resolution=32, weights=weights)


def run_snippet(build, x: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Runs the one-op-pattern graph `build(b, x_name)` on x."""
    b = GraphBuilder(weights=weights)
    y = build(b, b.input("x", x.shape[1:]))
    return session(b.model("snippet", {"y": (y, x.shape[1:])})).run(None, {"x": x})[0]


@settings(max_examples=20, deadline=None)
@given(d=st.integers(2, 16), seed=st.integers(0, 2**16))
def test_norm_patterns_match_numpy(d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (2, 3, d)).astype(np.float32)
    g, beta = rng.normal(size=d), rng.normal(size=d)
    w = {"n.weight": g, "n.bias": beta}
    x64 = x.astype(np.float64)
    ln = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * g + beta
    for pattern in (transformer.layer_norm, transformer.layer_norm_decomposed):
        out = run_snippet(lambda b, t, p=pattern: p(b, t, "n", d, 1e-5), x, dict(w))
        np.testing.assert_allclose(out, ln, rtol=1e-4, atol=1e-4)
    rms = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-6) * g
    out = run_snippet(lambda b, t: transformer.rms_norm(b, t, "n", d), x, {"n.weight": g})
    np.testing.assert_allclose(out, rms, rtol=1e-4, atol=1e-4)


def test_activation_patterns_match_numpy():
    x = np.linspace(-6, 6, 2 * 3 * 8, dtype=np.float32).reshape(2, 3, 8)
    gelu = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    np.testing.assert_allclose(run_snippet(lambda b, t: transformer.gelu_erf(b, t, "g"), x, {}),
                               gelu, rtol=1e-5, atol=1e-6)
    silu = x / (1 + np.exp(-x))
    np.testing.assert_allclose(run_snippet(lambda b, t: transformer.silu(b, t, "s"), x, {}),
                               silu, rtol=1e-5, atol=1e-6)
