"""SCALE-Sim-compatible counts, against hand arithmetic from SCALE-Sim 3's rules.

One GEMM of M = 10 ofmap pixels, N = 6 filters, K = 5 window elements on a 4 x 4 array, with
an ifmap of 50 distinct words. Mappings (Sr, Sc, T): os (10, 6, 5), ws (5, 6, 10), is (5, 10, 6).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable
from hwmodels import scalesim
from hwmodels.macarray import evaluate
from hwmodels.target import load_target

BIG = (1e6, 1e6, 1e6)  # KiB: every operand fits


def _table(m: int = 10, n: int = 6, k: int = 5, groups: int = 1, a_in: int = 50) -> LayerTable:
    one = np.ones(2, dtype=np.int64)
    arr = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    return LayerTable(("gemm", "relu"), arr(KIND_CODE["conv"], KIND_CODE["activation"]),
                      arr(KIND_CATEGORY["conv"], KIND_CATEGORY["activation"]),
                      arr(m, 0), arr(n, 0), arr(k, 0), arr(groups, 1), arr(m * n * k * groups, 0),
                      0 * one, arr(k * n * groups, 0), arr(a_in, m * n), arr(m * n * groups, m * n),
                      arr(4 * a_in, 4 * m * n), arr(4 * m * n, 4 * m * n),
                      arr(4 * k * n * groups, 0), np.ones(2), np.ones(2))


# dataflow: (cycles, sram ifmap, sram filter, sram ofmap), by hand:
#   os: fr=3, fc=2, fill=4+4-2=6: 6*(6+5)=66; ifmap fc*MK=100; filter fr*KN=90;
#       ofmap MN + folds*(R+C) = 60 + 6*8 = 108
#   ws: fr=2, fc=2, fill=2*4+4-2=10: 4*(10+10)=80; ifmap fc*MK=100; filter KN=30; ofmap fr*MN=120
#   is: fr=2, fc=3, fill=10: 6*(10+6)=96; ifmap MK=50; filter fc*KN=90; ofmap fr*MN=120
HAND = {"os": (66, 100, 90, 108), "ws": (80, 100, 30, 120), "is": (96, 50, 90, 120)}


@pytest.mark.parametrize("dataflow", list(HAND))
def test_counts_match_hand_arithmetic(dataflow: str) -> None:
    c = scalesim.counts(_table(), dataflow, 4, 4, BIG)
    cycles, s_if, s_f, s_of = HAND[dataflow]
    assert c.model == scalesim.MODEL and c.layers == ("gemm", "relu")
    assert (c.compute_cycles[0], c.sram_ifmap_reads[0], c.sram_filter_reads[0],
            c.sram_ofmap_writes[0]) == (cycles, s_if, s_f, s_of)
    # everything fits: the ifmap's 50 distinct words and the 30 filter words come once; the
    # ofmap's demand-matrix words all go out (os: M*N = 60, the R + C per fold is a counter)
    assert (c.dram_ifmap_reads[0], c.dram_filter_reads[0], c.dram_ofmap_writes[0]) == \
        (50, 30, 60 if dataflow == "os" else s_of)
    assert all(getattr(c, f)[1] == 0 for f in scalesim.kernel.FIELDS)  # not a GEMM


# a 32-byte SRAM (16-byte active half) holds neither the ifmap (50) nor the filters (30):
# os re-reads the ifmap per column fold (2x) and the filters per row fold (3x); ws re-reads
# the ifmap per column fold (2x), never its filters; is re-reads the filters per column fold
# (3x), never its ifmap
SMALL = {"os": (100, 90), "ws": (100, 30), "is": (50, 90)}


@pytest.mark.parametrize("dataflow", list(SMALL))
def test_dram_rereads_when_the_operand_overflows_half_the_sram(dataflow: str) -> None:
    c = scalesim.counts(_table(), dataflow, 4, 4, (32 / 1024, 32 / 1024, 1.0))
    assert (c.dram_ifmap_reads[0], c.dram_filter_reads[0]) == SMALL[dataflow]


def test_groups_are_separate_gemms() -> None:
    """3 groups of the same GEMM: three times every count; each group's ifmap is a third."""
    one = scalesim.counts(_table(), "os", 4, 4, BIG)
    three = scalesim.counts(_table(groups=3, a_in=150), "os", 4, 4, BIG)
    for f in scalesim.kernel.FIELDS:
        assert getattr(three, f)[0] == 3 * getattr(one, f)[0], f


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_compute_cycles_equal_edgesims_model_when_partial_sums_fit(dataflow: str) -> None:
    """With SRAMs large enough that edgesim's own model never chunks the stream and no DRAM
    time shows, both models count the same fill + stream per fold."""
    base = dataclasses.replace(load_target("systolic-16x16"), rows=4, cols=4,
                               dataflow=dataflow, ifmap_sram_kib=1e9, filter_sram_kib=1e9,
                               ofmap_sram_kib=1e9, dram_bandwidth_gbps=1e12)
    own = evaluate(_table(), np.array([[8, 8]]), base).cycles[0, 0]
    assert scalesim.counts(_table(), dataflow, 4, 4, BIG).compute_cycles[0] == own
    assert own == HAND[dataflow][0]


def test_a_strided_1x1_conv_reads_only_the_pixels_it_touches() -> None:
    """A 1x1 stride-2 conv over a 4x4x2 ifmap (32 words) touches 2x2 pixels: its im2col copy,
    M*K = 4*2 = 8 words, is all that comes from DRAM."""
    c = scalesim.counts(_table(m=4, n=3, k=2, a_in=32), "ws", 4, 4, BIG)
    assert c.dram_ifmap_reads[0] == 8 and c.sram_ifmap_reads[0] == 8  # fc = 1
