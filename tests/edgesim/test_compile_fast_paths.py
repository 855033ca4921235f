"""The compile's fast paths give what the plain paths give: onnxruntime sessions that park
their threads (no spinning) compute the same outputs bit for bit, and the histogram with
interleaved counter rows counts what numpy's histogram counts, for every length's tail."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.emit import emit
from compiler.quantizers import range_stats
from edgesim import calibration as cal
from edgesim.evaluate import session
from edgesim.loading import load_graph


def test_a_session_without_spinning_computes_what_the_default_session_does() -> None:
    g = load_graph("zoo:digits_cnn")
    model = emit(g, check=False)
    feeds = next(cal.batches(g, cal.random_samples(g, 4, seed=1)))
    plain, parked = session(model), session(model, threads=2, spin=False)
    names = [o.name for o in plain.get_outputs()]
    for want, got in zip(plain.run(names, feeds), parked.run(names, feeds)):
        assert np.abs(want).max() > 0  # a real output, not zeros on both sides
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", range(1, 10))
def test_histogram_counts_every_value_whatever_the_length(n: int) -> None:
    # runs of one value (a ReLU's zeros) and a tail of 1-3 values past the 4-wide rows
    x = np.concatenate([np.zeros(n, np.float32), np.linspace(-3, 5, n, dtype=np.float32)])
    stats = range_stats(x, 64)
    edges = np.linspace(-stats.half_range, stats.half_range, 65)  # powers of two: exact
    np.testing.assert_array_equal(stats.hist, np.histogram(x, bins=edges)[0])
    assert stats.hist.sum() == x.size
