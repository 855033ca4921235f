"""`Builder.const` shares an initializer between equal contents only.

Oracle: the former content key, sha256 over the bytes (kept here as `_hashed_const`); the
emitted model must serialise to the same bytes with it, and contents that differ anywhere
(even off the 64-element sample the builder buckets on) must get their own initializer.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from onnx import numpy_helper

from compiler.emit import emit
from compiler.emit.builder import Builder
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from edgesim import assignment, zoo


def _hashed_const(self: Builder, base: str, value: np.ndarray) -> str:
    """The old `Builder.const`: content keyed by dtype, shape and sha256 of the bytes."""
    value = np.asarray(value)
    digest = hashlib.sha256(value.tobytes()).digest() if value.size else b""
    key = (value.dtype.str, value.dtype.name, value.shape, digest)
    table = self.__dict__.setdefault("_hashed", {})
    if key not in table:
        name = self.fresh(base)
        self.inits[name] = numpy_helper.from_array(value, name)
        table[key] = name
    return table[key]


@pytest.mark.parametrize("label", ["w8a8", "w4"])
def test_emitted_bytes_match_hashed_consts(monkeypatch: pytest.MonkeyPatch, label: str) -> None:
    rng = np.random.default_rng(0)
    g = load(zoo.build("mobilenet_v2", resolution=32, num_classes=10))
    calib = calibrate(g, [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}])
    bits = assignment.uniform(g, 8 if label == "w8a8" else 4)
    q = quantize(g, bits, calib, QuantOptions(clip="minmax"))
    new = emit(q, check=False).SerializeToString()
    monkeypatch.setattr(Builder, "const", _hashed_const)
    assert new == emit(q, check=False).SerializeToString()


def _builder() -> Builder:
    return Builder(load(zoo.build("digits_cnn")))


def test_equal_contents_share_one_initializer() -> None:
    b, w = _builder(), np.random.default_rng(1).standard_normal((300, 7)).astype(np.float32)
    assert b.const("a", w) == b.const("b", w.copy()) == b.const("c", np.asfortranarray(w))
    nan = np.full(5, np.nan, np.float32)
    assert b.const("n", nan) == b.const("m", nan.copy())  # same bytes, though NaN != NaN


def test_any_difference_gets_its_own_initializer() -> None:
    b, w = _builder(), np.random.default_rng(2).standard_normal((300, 7)).astype(np.float32)
    first = b.const("a", w)
    off_sample = w.copy()
    off_sample.reshape(-1)[1] += 1.0  # the sample takes every 32nd element: not this one
    assert b.const("b", off_sample) not in (first,)
    assert b.const("c", w.astype(np.float64)) != first  # same values, another dtype
    assert b.const("d", w.reshape(7, 300)) != first  # same bytes, another shape
    zeros = np.zeros(3, np.float32)
    assert b.const("z", zeros) != b.const("y", -zeros)  # equal values, other bytes
    names = {first, b.const("e", off_sample), b.const("f", w)}
    assert len(names) == 2 and np.array_equal(numpy_helper.to_array(b.inits[first]), w)
