"""`simulate` needs shapes, not weights: a decoder saved with external data simulates the same
after its data file is overwritten with garbage (so no weight byte was read), and its lowered
weights are zero-stride placeholders that hold no memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.frontend import load
from edgesim import api
from edgesim.zoo.decoder import DecoderShape, kv_decoder

SHAPE = DecoderShape(vocab=256, hidden=128, layers=2, heads=4, kv_heads=2, intermediate=344)
INPUTS = {"input_ids": (1, 8), **{f"past_key_values.{i}.{kv}": (1, 2, 4, 32)
                                  for i in range(2) for kv in ("key", "value")}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:  # noqa: ANN001
    path = tmp_path_factory.mktemp("decoder") / "decoder.onnx"
    onnx.save(kv_decoder(SHAPE), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="decoder.data", size_threshold=1024)
    return path


def _garbage(data: Path) -> None:
    size = data.stat().st_size
    data.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def test_simulate_reads_no_weight_byte(saved: Path, tmp_path: Path) -> None:
    want = api.simulate(str(saved), "rpi5", bits=4, input_shapes=INPUTS)
    copy = tmp_path / "decoder.onnx"
    copy.write_bytes(saved.read_bytes())
    (tmp_path / "decoder.data").write_bytes((saved.parent / "decoder.data").read_bytes())
    _garbage(tmp_path / "decoder.data")  # any value read from it would be noise
    full = load(str(copy), INPUTS)  # reading the garbage gives other weights ...
    assert any(not np.array_equal(full.weights[n], v) for n, v in
               load(str(saved), INPUTS).weights.items())
    got = api.simulate(str(copy), "rpi5", bits=4, input_shapes=INPUTS)  # ... simulate reads none
    assert got.total == want.total
    for a, b in zip(got.layers, want.layers):
        assert dataclasses.asdict(a) == dataclasses.asdict(b)


def test_shape_only_weights_hold_no_memory(saved: Path) -> None:
    g = load(str(saved), INPUTS, shapes_only=True)
    full = load(str(saved), INPUTS)
    big = [n for n, v in full.weights.items() if v.nbytes > 1024]  # stored externally
    assert len(big) >= 2 * 7  # q, k, v, o, gate, up, down per layer
    for name in big:
        w = g.weights[name]
        assert w.shape == full.weights[name].shape and w.dtype == full.weights[name].dtype
        assert not w.flags.writeable and 0 in w.strides  # a broadcast view: no data behind it
    np.testing.assert_array_equal(g.layer_table().macs, full.layer_table().macs)
    np.testing.assert_array_equal(g.layer_table().w_elems, full.layer_table().w_elems)
