"""ncnn's LRN runs on fp32, elempack-1 blobs (kernels.cpu_ncnn.lrn_layout_bytes): the layout
conversions around it and its own pass, checked as bytes over a DRAM roof in closed form."""

from __future__ import annotations

import pytest

from hwmodels.cpu import CacheLevel, Dram
from hwmodels.kernels import cpu_ncnn as N
from tests.hwmodels.test_cpu import OVH, cycles, layer, simple_target

ELEMS = 1 << 20  # a 1 Mi-element blob: 4 MiB in fp32, far beyond the 64 KiB cache below


def _lrn_cycles(isa: tuple[str, ...], runtime: str = "ncnn") -> float:
    """One core at 1 GHz, one 64 KiB cache level, DRAM at one byte per cycle; an LRN-like
    norm layer with no arithmetic (ops = 0), so its time is its bytes."""
    t = simple_target(isa=isa, caches=(CacheLevel(1, 64, 64, 4, 1e6, False),),
                      dram=Dram("t", 1.0, 1.0))
    lrn = layer("norm", a_in=ELEMS, a_out=ELEMS, ops=0)
    return float(cycles([lrn], [(32, 32)], t, threads=1, runtime=runtime)[0, 0])


def test_layout_bytes_from_net_cpp_convert_layout():
    assert N.lrn_layout_bytes(True) == 20.0   # unpack 2+2, cast 2+4, cast 4+2, pack 2+2
    assert N.lrn_layout_bytes(False) == 16.0  # unpack 4+4, pack 4+4


@pytest.mark.parametrize("isa, convert", [(("neon", "fp16"), 20), (("neon",), 16)])
def test_ncnn_lrn_pays_its_conversions_and_runs_in_fp32(isa, convert):
    # conversions: convert B per element; the LRN itself reads and writes fp32 (4 + 4 B),
    # even where ncnn keeps other blobs in fp16
    assert _lrn_cycles(isa) == pytest.approx(ELEMS * (convert + 8) + OVH, rel=0.01)


def test_onnxruntime_norm_has_no_ncnn_conversions():
    # the onnxruntime profile streams the fp32 blob once: read + write
    assert _lrn_cycles(("neon",), "onnxruntime") == pytest.approx(ELEMS * 8 + OVH, rel=0.01)
