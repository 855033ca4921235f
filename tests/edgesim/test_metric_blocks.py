"""edgesim.evaluate's cosine and SQNR, computed a block of rows at a time: the same figures as
the float64 formulas on whole arrays, in memory bounded by the block, not the output."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgesim.evaluate import METRIC_BLOCK_ELEMS, cosine, fidelity_metrics, sqnr_db


def _cosine_whole(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-sample cosine, on whole float64 copies (a zero row counts as 1)."""
    ra = np.asarray(a, np.float64).reshape(len(a), -1)
    rb = np.asarray(b, np.float64).reshape(len(b), -1)
    den = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
    cos = [float(x @ y) / d if d > 0 else 1.0 for x, y, d in zip(ra, rb, den)]
    return float(np.mean(cos))


def _sqnr_whole(ref: np.ndarray, test: np.ndarray) -> float:
    r = np.asarray(ref, np.float64)
    e = np.asarray(test, np.float64) - r
    return float(10 * np.log10(np.sum(r * r) / np.sum(e * e)))


@pytest.mark.parametrize("shape", [
    (32, 40, 6625),                    # PP-OCR's output: a row larger than a block
    (37, 3 * METRIC_BLOCK_ELEMS // 8),  # rows that leave a partial last block
    (1000, 10),                        # many small rows, several to a block
    (5,),                              # a 1-D array is one sample
])
def test_blocks_give_the_whole_array_figures(shape) -> None:
    rng = np.random.default_rng(len(shape))
    ref = rng.normal(size=shape).astype(np.float32)
    test = (ref + rng.normal(0, 0.05, shape)).astype(np.float32)
    if len(shape) > 1:
        ref[3] = test[3] = 0.0  # a zero sample: cosine 1 by definition
    want_cos, want_sqnr = _cosine_whole(ref.reshape(1, -1) if len(shape) == 1 else ref,
                                        test.reshape(1, -1) if len(shape) == 1 else test), \
        _sqnr_whole(ref, test)
    assert cosine(ref, test) == pytest.approx(want_cos, rel=1e-12)
    assert sqnr_db(ref, test) == pytest.approx(want_sqnr, rel=1e-12)
    got = fidelity_metrics(ref, test, "tensor")
    assert (got["cosine"], got["sqnr_db"]) == (pytest.approx(want_cos, rel=1e-12),
                                               pytest.approx(want_sqnr, rel=1e-12))


def test_metrics_hold_a_block_not_the_output() -> None:
    """The fidelity check's metrics on a 256 x 8192 output (8 MiB in float32) allocate less
    than one more copy of it (whole-array float64 conversions: 48 MiB)."""
    rng = np.random.default_rng(0)
    ref = rng.random((256, 8192), dtype=np.float32)
    test = ref + np.float32(1e-3)
    tracemalloc.start()
    try:
        fidelity_metrics(ref, test, "tensor")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < ref.nbytes


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        cosine(np.ones((2, 3)), np.ones((2, 4)))
