"""`edgesim.calibration.split`: the held samples are spread evenly over the data set, and the
two parts are disjoint and together the whole (checked sample by sample)."""

from __future__ import annotations

import numpy as np

from edgesim.calibration import CalibrationData, split


def test_split_holds_evenly_spread_samples_and_keeps_the_rest() -> None:
    x = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    fit, held = split(CalibrationData({"x": x, "y": -x}, "test"), 16)
    assert held.count == 16 and fit.count == 48
    assert held.samples["x"][:, 0].tolist() == [3 * i for i in range(0, 64, 4)]
    together = np.concatenate([fit.samples["x"], held.samples["x"]])
    assert sorted(together[:, 0].tolist()) == x[:, 0].tolist()
    assert np.array_equal(held.samples["y"], -held.samples["x"])  # inputs stay paired


def test_a_small_data_set_is_halved() -> None:
    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    fit, held = split(CalibrationData({"x": x}, "test"), 16)
    assert held.samples["x"].ravel().tolist() == [0.0, 2.0, 4.0]
    assert fit.samples["x"].ravel().tolist() == [1.0, 3.0, 5.0]
