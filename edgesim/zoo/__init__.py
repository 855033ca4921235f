"""The model zoo: ONNX builders for standard architectures and two small trained models.

`ZOO` maps each name to a function returning an `onnx.ModelProto`; `build(name, **kw)` calls
it. The architecture builders take `seed=` (seeded random weights) and `weights=` (a name ->
array mapping that replaces the random draws); the `digits_*` entries load the shipped trained
models (see `edgesim.zoo.trained`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import onnx

from compiler.errors import ModelError
from edgesim.zoo.cnn import mobilenet_v2, resnet18, resnet50
from edgesim.zoo.decoder import kv_decoder
from edgesim.zoo.trained import digits_cnn, digits_transformer, load_digits_data, tiny_lm
from edgesim.zoo.transformer import llama, minilm, vit_tiny

ZOO: Mapping[str, Callable[..., onnx.ModelProto]] = MappingProxyType({
    "mobilenet_v2": mobilenet_v2,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vit_tiny": vit_tiny,
    "minilm": minilm,
    "llama": llama,
    "digits_cnn": digits_cnn,
    "digits_transformer": digits_transformer,
})

# KV-cache decoders (`edgesim generate zoo:NAME`), apart from `ZOO`: their interface (past /
# present, dynamic lengths) is not one fixed-shape forward pass
DECODERS: Mapping[str, Callable[..., onnx.ModelProto]] = MappingProxyType({
    "kv_decoder": kv_decoder,
    "tiny_lm": tiny_lm,
})


def build(name: str, **kw: Any) -> onnx.ModelProto:
    """The zoo model `name`, built (or loaded) with keyword arguments `kw`.

    Raises:
        ModelError: (a ValueError) if `name` is not in the zoo; the message lists the names.
    """
    if name not in ZOO:
        raise ModelError(name, f"no such zoo model; available: {', '.join(sorted(ZOO))}")
    return ZOO[name](**kw)


__all__ = ["DECODERS", "ZOO", "build", "load_digits_data"]
