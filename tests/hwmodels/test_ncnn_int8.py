"""ncnn's int8 conv chain (hwmodels.ncnn_int8): which convs requantise, against the flags
ncnn's own quantiser wrote into its benchmark `*_int8.param` files, and the passes each path
books, in closed form."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from compiler.ir import KIND_CODE
from hwmodels import cpu, ncnn_int8
from hwmodels.cpu import CacheLevel
from hwmodels.kernels import cpu as K
from tests.hwmodels.test_cpu import FAST, OVH, conv, cycles, layer, make_table, simple_target

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_tables() -> dict:
    spec = importlib.util.spec_from_file_location("bench_fidelity", BENCH / "bench_fidelity.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.layer_tables()  # type: ignore[no-any-return]


def _param_modes() -> dict[str, dict[str, str]]:
    """model -> layer -> mode, from bench/fidelity/ncnn_int8.csv (ncnn2int8's output)."""
    modes: dict[str, dict[str, str]] = defaultdict(dict)
    with open(BENCH / "fidelity" / "ncnn_int8.csv", newline="") as f:
        for row in csv.DictReader(f):
            modes[row["model"]][row["layer"]] = row["mode"]
    return modes


def test_requantising_convs_match_ncnn2int8s_flags():
    tables, modes = _bench_tables(), _param_modes()
    wrong: list[str] = []
    total = 0
    for model, by_layer in modes.items():
        table = tables[model]
        out, _ = ncnn_int8.requantising(table)
        for i, name in enumerate(table.names):
            if table.kind_code[i] == KIND_CODE["conv"]:
                total += 1
                if out[i] != (by_layer[name] == "requant"):
                    wrong.append(f"{model}/{name}")
    assert total == 197  # convs; the other 7 GEMM rows are InnerProduct
    # the documented misses: branches whose size equals a sibling's input (ncnn_int8 docstring)
    assert sorted(wrong) == sorted(
        ["googlenet/inception_3b/1x1", "googlenet/inception_4c/1x1"]
        + [f"resnet18/res{s}a_branch1" for s in range(2, 6)])


def test_split_feeding_only_convs_requantises_and_marks_every_reader():
    rows = [conv(8, 16, 10, ksize=1),
            layer("identity", a_in=1600, a_out=3200),      # Split into two blobs
            conv(16, 32, 10, ksize=1), conv(16, 32, 10, ksize=3),
            layer("concat", a_in=6400, a_out=6400)]
    out, into = ncnn_int8.requantising(make_table(rows))
    assert out.tolist() == [True, False, False, False, False]   # concat reads the two convs
    assert into.tolist() == [False, False, True, True, False]


def test_split_with_a_non_conv_reader_dequantises():
    rows = [conv(8, 16, 10, ksize=1), layer("identity", a_in=1600, a_out=3200),
            conv(16, 16, 10, ksize=1), layer("eltwise", a_in=3200, a_out=1600, ops=1600)]
    out, into = ncnn_int8.requantising(make_table(rows))
    assert not out.any() and not into.any()


def _slow_llc_target() -> cpu.CpuTarget:
    """simple_target with a last cache level serving 1 byte per cycle: passes cost bytes."""
    levels = (CacheLevel(1, 64, 64, 4, FAST, False), CacheLevel(2, 1024, 64, 8, FAST, False),
              CacheLevel(3, 4096, 64, 16, 1.0, True))
    return simple_target(isa=("neon",), caches=levels)


def test_chain_books_requantise_pass_and_skips_the_next_quantise():
    # conv1 (16 x 10 x 10 = 1600 outputs) -> conv2, or conv1 -> pool -> conv2; tensors live in
    # the 1 B / cycle last level. Requantising conv1: a 4 B in + 1 B out pass instead of
    # dequantise (4 + 4) and the in-place activation (4 + 4): (16 - 5) x 1600 cycles less.
    # conv2 reading int8 skips its quantise pass (4 B in + 1 B out): 5 x 1600 cycles less.
    t, bits = _slow_llc_target(), [(8, 8)]
    c1, c2 = conv(8, 16, 10, ksize=1), conv(16, 16, 10, ksize=1)
    pool = layer("pool", a_in=1600, a_out=1600, ops=1600)
    chain = cycles([c1, c2], bits, t, runtime="ncnn")[:, 0]
    split = cycles([c1, pool, c2], bits, t, runtime="ncnn")[:, 0]
    assert split[0] - chain[0] == pytest.approx((16 - 5) * 1600)
    assert split[2] - chain[1] == pytest.approx(5 * 1600)


def test_chain_paths_only_change_ncnns_int8_layers():
    t = simple_target(isa=("neon",))
    table = make_table([conv(8, 16, 10, ksize=1), conv(16, 16, 10, ksize=1)])
    paths = cpu.layer_choices(table, np.array([[8, 8], [32, 32]]), t, K.RUNTIME_NCNN)
    assert paths[:, 0].tolist() == [K.PATH_NCNN_INT8_REQ, K.PATH_NCNN_INT8_IN]
    assert paths[:, 1].tolist() == [K.PATH_FP32, K.PATH_FP32]
    ort = cpu.layer_choices(table, np.array([[8, 8]]), t, K.RUNTIME_ORT)
    assert K.PATH_NCNN_INT8_REQ not in ort and K.PATH_NCNN_INT8_IN not in ort


def test_fp16_storage_shrinks_the_float_sides_of_the_passes():
    # On an fp16 core ncnn stores float blobs in fp16: conv1 (800 inputs, 1600 outputs, 1x1)
    # quantises 2 B -> 1 B (3 B, not 5) and dequantises int32 to fp16 and runs the activation
    # in place: 4 + 2 + 2 + 2 = 10 B, not 16. At 1 B / cycle: 800 x 2 + 1600 x 6 cycles less.
    bits = [(8, 8)]
    rows = [conv(8, 16, 10, ksize=1), layer("pool", a_in=1600, a_out=1600, ops=1600)]
    fp32 = cycles(rows, bits, _slow_llc_target(), runtime="ncnn")[0, 0]
    fp16 = dataclasses.replace(_slow_llc_target(), isa=("neon", "fp16"))
    half = cycles(rows, bits, fp16, runtime="ncnn")[0, 0]
    assert fp32 - half == pytest.approx(800 * 2 + 1600 * 6)


def _private_llc_target(cores: int) -> cpu.CpuTarget:
    """Every cache level private, the last serving 1 byte per cycle per core."""
    levels = (CacheLevel(1, 64, 64, 4, FAST, False), CacheLevel(2, 1024, 64, 8, FAST, False),
              CacheLevel(3, 4096, 64, 16, 1.0, False))
    return simple_target(isa=("neon",), caches=levels, cores=cores, thread_overhead_us=0.0)


@pytest.mark.parametrize("kind, speedup", [("concat", 1.0), ("transpose", 1.0),
                                           ("eltwise", 4.0)])
def test_ncnn_concat_and_channel_shuffle_run_on_one_thread(kind, speedup):
    # 4 x 64 KiB of fp32 in and out: four threads' worth of streaming; concat_arm.cpp's
    # channel concat and shufflechannel_arm.cpp have no omp loop, eltwise has one
    row = layer(kind, a_in=65536, a_out=65536, ops=65536 if kind == "eltwise" else 0)
    t = _private_llc_target(4)
    one = cycles([row], [(32, 32)], t, threads=1, runtime="ncnn")[0, 0]
    four = cycles([row], [(32, 32)], t, threads=4, runtime="ncnn")[0, 0]
    assert (one - OVH) / (four - OVH) == pytest.approx(speedup)
