"""The report says why a plan's predicted energy exceeds fp32's (PicoDet's uniform W8A8 on
rpi5: its QuantizeLinear / DequantizeLinear passes move more DRAM bytes than int8 saves)."""

from __future__ import annotations

import numpy as np

from edgesim.report import energy_note
from edgesim.simulation import Totals
from hwmodels.cost import Cost


def _cost(compute: list[float], onchip: list[float], dram: list[float]) -> Cost:
    col = lambda v: np.asarray(v, np.float64).reshape(-1, 1)  # noqa: E731
    n = len(compute)
    return Cost(cycles=col([1.0] * n), latency_s=col([1e-3] * n), energy_pj_compute=col(compute),
                energy_pj_onchip=col(onchip), energy_pj_dram=col(dram),
                bound=np.zeros((n, 1), np.int8), util=col([0.5] * n))


def test_a_plan_costlier_than_fp32_names_its_dram_share() -> None:
    # 1e9 pJ = 1 mJ: compute 1 + 1, on-chip 0.5 + 0.5, DRAM 4 + 3 mJ -> 10 mJ, DRAM 70 %
    cost = _cost([1e9, 1e9], [5e8, 5e8], [4e9, 3e9])
    fp32 = Totals(latency_ms=5.0, energy_mj=9.5, weight_bytes=4e6, peak_act_bytes=1e6)
    plan = Totals(latency_ms=4.0, energy_mj=10.0, weight_bytes=1e6, peak_act_bytes=1e6)
    (note,) = energy_note(fp32, plan, cost)
    assert "9.5 -> 10 mJ" in note and "DRAM traffic is 70% of it" in note


def test_a_plan_that_saves_energy_needs_no_note() -> None:
    cost = _cost([1e9], [1e9], [1e9])
    fp32 = Totals(latency_ms=5.0, energy_mj=9.5, weight_bytes=4e6, peak_act_bytes=1e6)
    plan = Totals(latency_ms=4.0, energy_mj=3.0, weight_bytes=1e6, peak_act_bytes=1e6)
    assert energy_note(fp32, plan, cost) == ()
    assert energy_note(fp32, fp32, cost) == ()  # equal is no rise
