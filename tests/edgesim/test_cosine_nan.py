"""An output holding NaN has no cosine with fp32: SwiftF0 compiled at uniform W4 put NaN in
79 % of its frames, and edgesim's fidelity read cosine 0.983 (a NaN row counted as a perfect
1.0), so `--min-fidelity 0.9` would have passed it. The oracle is the closed form
<a, b> / (|a| |b|) per row, averaged, which is NaN when a row is."""

from __future__ import annotations

import numpy as np
import pytest

from edgesim.errors import UserError
from edgesim.evaluate import cosine, fidelity_metrics
from edgesim.fidelity import check_fidelity


def _closed_form(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean([x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b)]))


def test_a_nan_row_makes_the_cosine_nan() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 16)).astype(np.float32)
    test = ref + 0.1 * rng.standard_normal((4, 16)).astype(np.float32)
    assert cosine(ref, test) == pytest.approx(_closed_form(ref, test), rel=1e-6)
    test[2, 5] = np.nan
    assert np.isnan(_closed_form(ref, test)) and np.isnan(cosine(ref, test))


def test_zero_rows_still_agree() -> None:
    """Two all-zero rows (silence in, silence out) agree: 1.0, as before."""
    ref = np.array([[0.0, 0.0], [1.0, 2.0]], np.float32)
    assert cosine(ref, ref.copy()) == pytest.approx(1.0)


def test_min_fidelity_fails_an_output_with_nan() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((8, 64)).astype(np.float32)
    test = ref.copy()
    test[:3, ::2] = np.nan  # most of the rows finite and equal to fp32
    figures = fidelity_metrics(ref, test, "tensor")
    with pytest.raises(UserError, match="min-fidelity"):
        check_fidelity(figures, 0.5)
