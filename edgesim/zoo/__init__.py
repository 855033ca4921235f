"""The model zoo: ONNX builders for standard architectures and two small trained models.

`ZOO` maps each name to a function returning an `onnx.ModelProto`; `build(name, **kw)` calls
it. The architecture builders take `seed=` (seeded random weights) and `weights=` (a name ->
array mapping that replaces the random draws); the `digits_*` entries load the shipped trained
models (see `edgesim.zoo.trained`).

The registry names each builder by "module:function" and imports its module on the first
lookup, so `simulate zoo:digits_cnn` loads neither the architecture builders nor the decoder
(with its MatMulNBits packing) it does not run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import ModelError

if TYPE_CHECKING:
    import onnx

Builder = Callable[..., "onnx.ModelProto"]


class LazyBuilders(Mapping[str, Builder]):
    """A read-only name -> builder mapping whose builders are imported when looked up."""

    def __init__(self, refs: Mapping[str, str]) -> None:
        """`refs`: name -> "module:function" (the function builds the model)."""
        self._refs = dict(refs)

    def __getitem__(self, name: str) -> Builder:
        module, _, function = self._refs[name].partition(":")
        builder: Builder = getattr(importlib.import_module(module), function)
        return builder

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


_CNN, _TRANSFORMER, _TRAINED = "edgesim.zoo.cnn", "edgesim.zoo.transformer", "edgesim.zoo.trained"

ZOO: Mapping[str, Builder] = LazyBuilders({
    "mobilenet_v2": f"{_CNN}:mobilenet_v2",
    "resnet18": f"{_CNN}:resnet18",
    "resnet50": f"{_CNN}:resnet50",
    "vit_tiny": f"{_TRANSFORMER}:vit_tiny",
    "minilm": f"{_TRANSFORMER}:minilm",
    "llama": f"{_TRANSFORMER}:llama",
    "digits_cnn": f"{_TRAINED}:digits_cnn",
    "digits_transformer": f"{_TRAINED}:digits_transformer",
})

# KV-cache decoders (`edgesim generate zoo:NAME`), apart from `ZOO`: their interface (past /
# present, dynamic lengths) is not one fixed-shape forward pass
DECODERS: Mapping[str, Builder] = LazyBuilders({
    "kv_decoder": "edgesim.zoo.decoder:kv_decoder",
    "tiny_lm": f"{_TRAINED}:tiny_lm",
})


def build(name: str, **kw: Any) -> onnx.ModelProto:
    """The zoo model `name`, built (or loaded) with keyword arguments `kw`.

    Raises:
        ModelError: (a ValueError) if `name` is not in the zoo; the message lists the names.
    """
    if name not in ZOO:
        raise ModelError(name, f"no such zoo model; available: {', '.join(sorted(ZOO))}")
    return ZOO[name](**kw)


def load_digits_data() -> dict[str, np.ndarray]:
    """The shipped calibration and test split of the digits data (`edgesim.zoo.trained`)."""
    from edgesim.zoo.trained import load_digits_data as load

    return load()


__all__ = ["DECODERS", "ZOO", "LazyBuilders", "build", "load_digits_data"]
