"""CNN builders (MobileNetV2, ResNet-18/50, the digits CNN) and the graph builder the zoo shares.

Every builder writes ONNX opset 17 with onnx.helper, a symbolic batch dim "N" and seeded random
weights scaled so that activations stay O(1) through depth (He-normal convs, BatchNorm with
running statistics near the identity, damped residual branches). Parameter names follow
torchvision's state-dict keys, so real weights can replace the random ones through `weights=`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError

OPSET = 17
IR_VERSION = 8
BATCH = "N"
RESIDUAL_GAIN = 0.4  # scale of the last BN in a residual branch: keeps the sum's variance bounded

Init = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def normal(std: float, mean: float = 0.0) -> Init:
    """An initializer drawing N(mean, std^2) in float32 (float64 draws are 2x slower)."""
    return lambda rng, shape: rng.standard_normal(shape, np.float32) * np.float32(std) + mean


def he_zero_sum(fan_in: int) -> Init:
    """He-normal conv filters with each filter's taps summing to zero.

    A zero-sum filter passes no channel mean on, so the positive means ReLU adds do not pile up
    through depth and drown the input-dependent signal (random deep nets collapse otherwise).
    """
    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        w = normal(np.sqrt(2.0 / fan_in))(rng, shape)
        taps = w.reshape(shape[0], -1)
        return (taps - taps.mean(axis=1, keepdims=True)).reshape(shape) if taps.shape[1] > 1 else w
    return draw


def uniform(low: float, high: float) -> Init:
    """An initializer drawing U(low, high) in float32."""
    return lambda rng, shape: rng.random(shape, np.float32) * np.float32(high - low) + low


class GraphBuilder:
    """Appends ONNX nodes and initializers; every parameter has a name trained weights can fill.

    Args:
        seed: seed of the generator that draws the parameters not given in `weights`.
        weights: parameter name -> array, used instead of a random draw; all must be used.
    """

    def __init__(self, seed: int = 0, weights: Mapping[str, np.ndarray] | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.weights = dict(weights or {})
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, TensorProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self._node_names: set[str] = set()

    def param(self, name: str, shape: Sequence[int], init: Init) -> str:
        """A float32 parameter: the given weight if there is one, else a seeded random draw."""
        return self.const(name, self.draw(name, shape, init))

    def draw(self, name: str, shape: Sequence[int], init: Init) -> np.ndarray:
        """The float32 value `param` would store (for builders that pack it themselves)."""
        shape = tuple(shape)
        value = self.weights.pop(name) if name in self.weights else init(self.rng, shape)
        value = np.asarray(value, dtype=np.float32)
        if value.shape != shape:
            raise ModelError(name, f"weight has shape {value.shape}, the graph needs {shape}")
        return value

    def const(self, name: str, value: np.ndarray | np.generic | float | int) -> str:
        """An initializer holding `value` exactly (dtype kept)."""
        self.inits[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def scalar(self, value: float) -> str:
        """A shared float32 scalar constant."""
        name = f"const_f{np.float32(value).item()}"  # the full float32 value: no collisions
        return name if name in self.inits else self.const(name, np.float32(value))

    def ints(self, values: Sequence[int]) -> str:
        """A shared int64 1-D constant (shapes, axes, slice bounds)."""
        name = "const_i" + "_".join(str(v) for v in values)
        return name if name in self.inits else self.const(name, np.array(values, np.int64))

    def op(self, op_type: str, inputs: Sequence[str], scope: str, **attrs: Any) -> str:
        """Appends one node named `scope/op_type` (deduplicated); returns its output tensor."""
        name, k = f"{scope}/{op_type}", 1
        while name in self._node_names:
            name, k = f"{scope}/{op_type}_{k}", k + 1
        self._node_names.add(name)
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def input(self, name: str, shape: Sequence[int], dtype: int = TensorProto.FLOAT) -> str:
        """Declares a graph input whose first dim is the symbolic batch "N"."""
        self.inputs.append(helper.make_tensor_value_info(name, dtype, [BATCH, *shape]))
        return name

    def model(self, graph_name: str,
              outputs: Mapping[str, tuple[str, Sequence[int | str]]]) -> onnx.ModelProto:
        """The finished model; `outputs` maps output name -> (tensor, shape without batch)."""
        if self.weights:
            raise ModelError(graph_name, f"weights not used by the graph: {sorted(self.weights)}")
        rename = {t: n for n, (t, _) in outputs.items()}
        nodes = [_renamed(node, rename) for node in self.nodes]
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [BATCH, *s])
                for n, (_, s) in outputs.items()]
        graph = helper.make_graph(nodes, graph_name, self.inputs, outs, list(self.inits.values()))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 ir_version=IR_VERSION, producer_name="edgesim.zoo")

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1,
             groups: int = 1, bias: bool = False, pad: int | None = None) -> str:
        """Conv with `k`x`k` kernel, padding `pad` (default k // 2), He-normal `name.weight`."""
        fan_in = cin // groups * k * k
        ins = [x, self.param(f"{name}.weight", (cout, cin // groups, k, k),
                             he_zero_sum(fan_in))]
        if bias:
            ins.append(self.param(f"{name}.bias", (cout,), normal(0.02)))
        return self.op("Conv", ins, name, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[k // 2 if pad is None else pad] * 4, dilations=[1, 1], group=groups)

    def batchnorm(self, x: str, name: str, c: int, gain: float = 1.0, eps: float = 1e-5) -> str:
        """BatchNormalization (inference) with per-channel statistics near the identity."""
        ins = [x, self.param(f"{name}.weight", (c,), uniform(0.8 * gain, 1.2 * gain)),
               self.param(f"{name}.bias", (c,), normal(0.05)),
               self.param(f"{name}.running_mean", (c,), normal(0.05)),
               self.param(f"{name}.running_var", (c,), uniform(0.8, 1.2))]
        return self.op("BatchNormalization", ins, name, epsilon=eps)

    def relu6(self, x: str, scope: str) -> str:
        """ReLU6 as exporters write it: Clip(x, 0, 6)."""
        return self.op("Clip", [x, self.scalar(0.0), self.scalar(6.0)], scope)

    def gemm(self, x: str, name: str, cin: int, cout: int) -> str:
        """Gemm classifier y = x W^T + b, W stored [out, in] as torch's Linear."""
        w = self.param(f"{name}.weight", (cout, cin), normal(1.0 / np.sqrt(cin)))
        b = self.param(f"{name}.bias", (cout,), normal(0.02))
        return self.op("Gemm", [x, w, b], name, alpha=1.0, beta=1.0, transB=1)

    def linear(self, x: str, name: str, cin: int, cout: int, bias: bool = True,
               gain: float = 1.0) -> str:
        """MatMul (+ Add bias) over the last axis, W stored [in, out] as exporters fold it."""
        w = self.param(f"{name}.weight", (cin, cout), normal(gain / np.sqrt(cin)))
        y = self.op("MatMul", [x, w], name)
        return self.op("Add", [y, self.param(f"{name}.bias", (cout,), normal(0.02))], name) \
            if bias else y

    def head(self, x: str, name: str, cin: int, cout: int) -> str:
        """GlobalAveragePool -> Flatten -> Gemm, the classifier tail of every zoo CNN."""
        x = self.op("GlobalAveragePool", [x], "avgpool")
        return self.gemm(self.op("Flatten", [x], "flatten", axis=1), name, cin, cout)


def _renamed(node: onnx.NodeProto, rename: Mapping[str, str]) -> onnx.NodeProto:
    # graph outputs take their public names ("logits") on the producing node itself
    for field in (node.input, node.output):
        field[:] = [rename.get(t, t) for t in field]
    return node


ACTIVATIONS: Mapping[str, Callable[[GraphBuilder, str, str], str]] = {
    "relu": lambda b, x, scope: b.op("Relu", [x], scope),
    "relu6": lambda b, x, scope: b.relu6(x, scope),
    "none": lambda b, x, scope: x,
}


def conv_bn(b: GraphBuilder, x: str, conv: str, bn: str, cin: int, cout: int, k: int,
            stride: int = 1, groups: int = 1, act: str = "relu", gain: float = 1.0) -> str:
    """Conv -> BatchNormalization -> activation, kept as separate nodes (BN folding input)."""
    y = b.batchnorm(b.conv(x, conv, cin, cout, k, stride, groups), bn, cout, gain)
    return ACTIVATIONS[act](b, y, bn)


def _basic_block(b: GraphBuilder, x: str, name: str, cin: int, cout: int, stride: int) -> str:
    y = conv_bn(b, x, f"{name}.conv1", f"{name}.bn1", cin, cout, 3, stride)
    y = conv_bn(b, y, f"{name}.conv2", f"{name}.bn2", cout, cout, 3, act="none",
                gain=RESIDUAL_GAIN)
    return b.op("Relu", [b.op("Add", [y, _shortcut(b, x, name, cin, cout, stride)], name)], name)


def _bottleneck(b: GraphBuilder, x: str, name: str, cin: int, cout: int, stride: int) -> str:
    # torchvision v1.5: the stride sits on the 3x3 conv; width = cout / 4
    w = cout // 4
    y = conv_bn(b, x, f"{name}.conv1", f"{name}.bn1", cin, w, 1)
    y = conv_bn(b, y, f"{name}.conv2", f"{name}.bn2", w, w, 3, stride)
    y = conv_bn(b, y, f"{name}.conv3", f"{name}.bn3", w, cout, 1, act="none", gain=RESIDUAL_GAIN)
    return b.op("Relu", [b.op("Add", [y, _shortcut(b, x, name, cin, cout, stride)], name)], name)


def _shortcut(b: GraphBuilder, x: str, name: str, cin: int, cout: int, stride: int) -> str:
    if stride == 1 and cin == cout:
        return x
    return conv_bn(b, x, f"{name}.downsample.0", f"{name}.downsample.1", cin, cout, 1, stride,
                   act="none")


def _resnet(block: Callable[..., str], depths: Sequence[int], expansion: int, num_classes: int,
            resolution: int, seed: int,
            weights: Mapping[str, np.ndarray] | None) -> onnx.ModelProto:
    b = GraphBuilder(seed, weights)
    x = conv_bn(b, b.input("input", (3, resolution, resolution)), "conv1", "bn1", 3, 64, 7, 2)
    x = b.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, depth in enumerate(depths):
        cout = 64 * 2**stage * expansion
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            x = block(b, x, f"layer{stage + 1}.{i}", cin, cout, stride)
            cin = cout
    return b.model("resnet", {"logits": (b.head(x, "fc", cin, num_classes), (num_classes,))})


def resnet18(num_classes: int = 1000, resolution: int = 224, seed: int = 0,
             weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """ResNet-18 (He et al. 2016, torchvision layout): 11.69 M params, 1.82 GMACs at 224."""
    return _resnet(_basic_block, (2, 2, 2, 2), 1, num_classes, resolution, seed, weights)


def resnet50(num_classes: int = 1000, resolution: int = 224, seed: int = 0,
             weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """ResNet-50 v1.5 (torchvision layout): 25.56 M params, 4.1 GMACs at 224."""
    return _resnet(_bottleneck, (3, 4, 6, 3), 4, num_classes, resolution, seed, weights)


# MobileNetV2 inverted-residual settings (Sandler et al. 2018, Table 2): t, c, n, s
_MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _inverted_residual(b: GraphBuilder, x: str, name: str, cin: int, cout: int, stride: int,
                       t: int) -> str:
    hidden, layers, y = cin * t, [], x
    if t != 1:  # expansion 1x1, absent in the first block as in torchvision
        y = conv_bn(b, y, f"{name}.conv.0.0", f"{name}.conv.0.1", cin, hidden, 1, act="relu6")
        layers.append(0)
    i = len(layers)
    y = conv_bn(b, y, f"{name}.conv.{i}.0", f"{name}.conv.{i}.1", hidden, hidden, 3, stride,
                groups=hidden, act="relu6")
    residual = stride == 1 and cin == cout
    y = conv_bn(b, y, f"{name}.conv.{i + 1}", f"{name}.conv.{i + 2}", hidden, cout, 1, act="none",
                gain=RESIDUAL_GAIN if residual else 1.0)
    return b.op("Add", [y, x], name) if residual else y


def mobilenet_v2(num_classes: int = 1000, resolution: int = 224, seed: int = 0,
                 weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """MobileNetV2 width 1.0 (torchvision layout): 3.50 M params, ~300 M MACs at 224."""
    b = GraphBuilder(seed, weights)
    x = conv_bn(b, b.input("input", (3, resolution, resolution)), "features.0.0", "features.0.1",
                3, 32, 3, 2, act="relu6")
    cin, idx = 32, 1
    for t, c, n, s in _MBV2_SETTINGS:
        for i in range(n):
            x = _inverted_residual(b, x, f"features.{idx}", cin, c, s if i == 0 else 1, t)
            cin, idx = c, idx + 1
    x = conv_bn(b, x, f"features.{idx}.0", f"features.{idx}.1", cin, 1280, 1, act="relu6")
    logits = b.head(x, "classifier.1", 1280, num_classes)
    return b.model("mobilenet_v2", {"logits": (logits, (num_classes,))})


def digits_cnn_graph(seed: int = 0,
                     weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The digits CNN on [N, 1, 8, 8]: three Conv-BN-ReLU (16, 32, 64), MaxPool, GAP, Gemm."""
    b = GraphBuilder(seed, weights)
    x = conv_bn(b, b.input("input", (1, 8, 8)), "conv1", "bn1", 1, 16, 3)
    x = conv_bn(b, x, "conv2", "bn2", 16, 32, 3)
    x = b.op("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    x = conv_bn(b, x, "conv3", "bn3", 32, 64, 3)
    return b.model("digits_cnn", {"logits": (b.head(x, "fc", 64, 10), (10,))})
