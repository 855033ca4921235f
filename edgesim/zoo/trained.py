"""The two small trained models shipped with edgesim and their evaluation data.

Both were trained on scikit-learn's 8x8 digits by `edgesim/zoo/train_digits.py` and written with
the zoo's own builders. They ship as package data in `edgesim.zoo.data`:

- `digits_cnn.onnx`: input `input` [N, 1, 8, 8] float32 in [0, 1], output `logits` [N, 10].
- `digits_transformer.onnx`: the same input (reshaped inside to 8 row tokens of 8 pixels),
  output `logits` [N, 10].
- `digits.npz`: `x_calib` [200, 1, 8, 8], `y_calib` [200], `x_test` [360, 1, 8, 8], `y_test`
  [360] (float32 images scaled to [0, 1], int64 labels), disjoint from the training images.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from importlib import resources

import numpy as np
import onnx

from edgesim.zoo.decoder import DecoderShape, kv_decoder

DATA_PACKAGE = "edgesim.zoo.data"
DATA_KEYS = ("x_calib", "y_calib", "x_test", "y_test")


def _read(filename: str) -> bytes:
    return resources.files(DATA_PACKAGE).joinpath(filename).read_bytes()


def load_digits_data() -> dict[str, np.ndarray]:
    """The shipped calibration and test split of the digits data.

    Returns:
        `x_calib`, `y_calib`, `x_test`, `y_test` as described in the module docstring.
    """
    with np.load(io.BytesIO(_read("digits.npz"))) as npz:
        return {k: npz[k] for k in DATA_KEYS}


def digits_cnn() -> onnx.ModelProto:
    """The trained digits CNN (Conv-BN-ReLU x3, MaxPool, GlobalAveragePool, Gemm)."""
    return onnx.load_from_string(_read("digits_cnn.onnx"))


def digits_transformer() -> onnx.ModelProto:
    """The trained digits transformer (8 row tokens, d 64, 2 pre-LN blocks, 4 heads)."""
    return onnx.load_from_string(_read("digits_transformer.onnx"))


# The tiny byte-level LM trained by `edgesim/zoo/train_lm.py` on the King James Bible
TINY_LM_SHAPE = DecoderShape(vocab=256, hidden=64, layers=4, heads=4, kv_heads=2,
                             intermediate=192, max_context=512)


def tiny_lm_weights() -> dict[str, np.ndarray]:
    """The shipped tiny LM's weights (stored float16), as float32 arrays by parameter name."""
    with np.load(io.BytesIO(_read("tiny_lm.npz"))) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def tiny_lm(formats: Mapping[str, str] | str = "fp32", kv_dtype: str = "fp32") -> onnx.ModelProto:
    """The shipped tiny LM as a KV-cache decoder (`edgesim.zoo.decoder`), linears in `formats`,
    its KV cache in `kv_dtype` ("fp32" or "fp16").

    Byte vocabulary (256), 4 layers, d 64, 4 query / 2 KV heads, SwiGLU 192, tied head,
    ~0.21 M parameters.
    """
    shape = dataclasses.replace(TINY_LM_SHAPE, kv_dtype=kv_dtype)
    return kv_decoder(shape, formats, weights=tiny_lm_weights())


def load_lm_text() -> dict[str, np.ndarray]:
    """Held-out KJV bytes for the tiny LM: `calib` (8 KiB) and `test` (16 KiB), uint8."""
    with np.load(io.BytesIO(_read("tiny_lm_text.npz"))) as z:
        return {k: z[k] for k in z.files}
