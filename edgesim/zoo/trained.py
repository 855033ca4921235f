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

import io
from importlib import resources

import numpy as np
import onnx

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
