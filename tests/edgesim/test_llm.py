"""Decoder prediction: shapes from config.json, bytes per token, KV cache, roofline, RAM fit.

Oracles: parameter counts published with the models (Hugging Face model cards / safetensors
metadata), hand arithmetic of the MatMulNBits layout and the KV cache, and the roofline's
closed form on targets made compute- or memory-unbounded.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from edgesim.cli import COMPILE_NOTICE
from edgesim.errors import UserError
from edgesim.llm import check_fit, footprint, load_config, parse_format, simulate_llm
from edgesim.llm.config import shipped_configs
from edgesim.llm.fit import GIB, RUNTIME_BYTES
from edgesim.llm.phases import overhead_s, read_bandwidth
from edgesim.llm.traffic import decode_bytes, kv_bytes_per_position
from hwmodels.target import load_target

RPI5 = load_target("rpi5")


@pytest.mark.parametrize("name, params", [
    ("qwen2.5-0.5b", 494_032_768),     # Qwen2.5-0.5B: "0.49B" (safetensors total)
    ("qwen2.5-1.5b", 1_543_714_304),   # Qwen2.5-1.5B: "1.54B"
    ("llama-3.2-1b", 1_235_814_400),   # Llama-3.2-1B: "1.23B"
    ("smollm-135m", 134_515_008),      # SmolLM-135M
    ("llama-3.1-8b", 8_030_261_248),   # Llama-3.1-8B: "8.03B"
])
def test_shipped_configs_have_the_published_parameter_counts(name: str, params: int) -> None:
    assert load_config(f"zoo:{name}").total_params() == params


def test_zoo_lists_the_shape_exact_configs() -> None:
    assert {"qwen2.5-0.5b", "qwen2.5-1.5b", "llama-3.2-1b", "smollm-135m"} <= set(
        shipped_configs())


def test_q4_bytes_per_token_closed_form() -> None:
    cfg = load_config("zoo:qwen2.5-0.5b")
    # per block: q,o 896x896, k,v 896x128, gate/up/down 896x4864
    block = 2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864
    assert block == 14_909_440
    bpw = 0.5 + 4 / 32          # 4-bit nibbles + one fp32 scale per 32 weights, symmetric
    head = 151936 * 896 * bpw   # tied head, MatMulNBits in the same format
    small = (24 * (2 * 896 + 896 + 2 * 128) + 896) * 4   # norms + q/k/v biases, fp32
    kv_per_pos = 2 * 24 * 2 * 64 * 4                     # K and V, 24 layers, 2 KV heads, fp32
    c = 1000
    expected = (24 * block * bpw + head + small + 896 * bpw + kv_per_pos * (c + 1)
                + 151936 * 4)   # + one embedding row, the new K/V, fp32 logits
    got = decode_bytes(cfg, parse_format("q4"), parse_format("q4"), "fp32", np.array([c]))
    assert got[0] == pytest.approx(expected, rel=1e-12)


def test_matmulnbits_bytes_per_weight() -> None:
    assert parse_format("q8").bytes_per_weight() == 1 + 4 / 32
    assert parse_format("q4b128").bytes_per_weight() == 0.5 + 4 / 128
    assert parse_format("q2z").bytes_per_weight() == 0.25 + (4 + 0.25) / 32  # packed 2-bit zp
    assert parse_format("fp32").bytes_per_weight() == 4


@pytest.mark.parametrize("spec", ["q3", "q4b24", "int4", "q4b8"])
def test_bad_formats_raise_user_errors(spec: str) -> None:
    with pytest.raises(UserError, match="format"):
        parse_format(spec)


def test_kv_cache_size_llama_3_2_1b() -> None:
    cfg = load_config("zoo:llama-3.2-1b")
    # 16 layers x 8 KV heads x 64 dims x (K, V) x 2 bytes = 32 KiB per token in fp16
    assert kv_bytes_per_position(cfg, "fp16") == 32 * 1024
    assert footprint(cfg, "q4", 4096, 1, "fp32").kv_cache == 256 * 2**20


def test_decode_is_bandwidth_over_bytes_when_compute_is_free() -> None:
    fast = dataclasses.replace(RPI5, clock_ghz=1e6)   # compute takes ~no time
    cfg, ctx = load_config("zoo:qwen2.5-0.5b"), np.array([128, 4096])
    sim = simulate_llm(cfg, fast, ["q4", "q8"], [1, 2, 4], ctx)
    bw = np.array([13.78e9, 12.72e9, 10.6e9])          # targets/rpi5.yaml at 1, 2, 4 threads
    expected = sim.bytes_per_token[:, None, :] / bw[None, :, None] + overhead_s(
        cfg, fast, np.array([1, 2, 4]))[None, :, None]
    # one thread's kernels (at a 1e6 GHz clock) add ~1e-6 of the time to its stream
    np.testing.assert_allclose(sim.decode_s, expected, rtol=1e-5)
    assert sim.decode_memory_bound.all()


def test_decode_is_macs_over_rate_when_memory_is_free() -> None:
    t = np.array([1, 4])
    fast = dataclasses.replace(RPI5, read_bandwidth_gbps_by_threads=(1e9,) * 4)
    cfg = load_config("zoo:smollm-135m")
    sim = simulate_llm(cfg, fast, ["fp32"], t, [1])
    # fp32 GEMV: 2 FMA pipes x 4 lanes x 2.4 GHz x 0.85 efficiency per thread; no unpacking
    rate = 2 * 4 * 2.4e9 * 0.85 * t
    # 30 blocks of q,o 576x576, k,v 576x192, gate/up/down 576x1536, and the head 49152x576
    macs = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) + 49152 * 576
    attn = 2 * 30 * 9 * 64 * 1
    expected = (macs + attn) / rate + overhead_s(cfg, fast, t)
    # streaming the bytes at 1e9 GB/s adds ~1e-7 of the time
    np.testing.assert_allclose(sim.decode_s[0, :, 0], expected, rtol=1e-6)
    assert not sim.decode_memory_bound.any()


def test_longer_context_and_fatter_formats_are_slower() -> None:
    sim = simulate_llm(load_config("zoo:qwen2.5-1.5b"), RPI5, ["q4", "q8", "fp32"],
                       None, [128, 1024, 8192])
    tps = sim.tokens_per_s
    assert (np.diff(tps, axis=2) < 0).all()
    assert (tps[0] > tps[1]).all() and (tps[1] > tps[2]).all()
    assert (np.diff(sim.ttft_s, axis=1) < 0).all()   # prefill scales with threads


def test_read_bandwidth_falls_back_to_sustained_dram() -> None:
    plain = dataclasses.replace(RPI5, read_bandwidth_gbps_by_threads=None)
    assert read_bandwidth(plain, np.array([1, 4])).tolist() == [9.5e9, 9.5e9]


def test_8b_q4_is_refused_on_4gib_and_fits_on_8gib() -> None:
    cfg = load_config("zoo:llama-3.1-8b")
    fp = footprint(cfg, "q4", 4096, 128)
    with pytest.raises(UserError, match=r"overflows by \d+\.\d\d GiB"):
        check_fit(fp, cfg.name, RPI5, 4)
    msg = check_fit(fp, cfg.name, RPI5, 8)
    spare = 8 - 0.5 - fp.total() / GIB
    assert f"{spare:.2f} GiB to spare" in msg and spare > 0
    # weights alone: 6.98e9 linear weights + 2 x 525M embedding/head at 0.625 B each
    assert fp.weights == pytest.approx((32 * 218_103_808 + 2 * 128256 * 4096) * 0.625
                                       + (32 * 2 + 1) * 4096 * 4)
    assert fp.runtime == RUNTIME_BYTES


def test_ram_variant_must_exist() -> None:
    fp = footprint(load_config("zoo:smollm-135m"), "q8", 512, 16)
    with pytest.raises(UserError, match="--ram 3"):
        check_fit(fp, "m", RPI5, 3)
    no_ram = dataclasses.replace(RPI5, ram_options_gib=None, ram_reserved_gib=None)
    with pytest.raises(UserError, match="lists no RAM sizes"):
        check_fit(fp, "m", no_ram, None)
    assert "3.00 GiB free" in check_fit(fp, "m", no_ram, 3)   # any size without variants


def test_config_errors_name_the_field(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "intermediate_size": 128}))
    with pytest.raises(UserError, match="config.json: vocab_size: missing"):
        load_config(path)
    path.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 9,
                                "num_attention_heads": 4, "intermediate_size": 128,
                                "num_key_value_heads": 3}))
    with pytest.raises(UserError, match="num_key_value_heads"):
        load_config(path)


def _edgesim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesim", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_refuses_8b_on_4gib_in_one_line() -> None:
    res = _edgesim("simulate", "zoo:llama-3.1-8b", "--target", "rpi5", "--ram", "4",
                   "--formats", "q4")
    assert res.returncode == 2, res.stderr
    # a cold numba cache adds its one announcement line before the work starts
    lines = [line for line in res.stderr.strip().splitlines()
             if line != COMPILE_NOTICE]
    assert len(lines) == 1 and "does not fit" in lines[0] and "overflows by" in lines[0]


def test_cli_simulate_config_json_tables(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 256,
                                "num_attention_heads": 4, "intermediate_size": 128}))
    res = _edgesim("simulate", str(path), "--target", "rpi5", "--context", "16:64:4", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["contexts"] == [16, 32, 48, 64] and out["threads"] == [1, 2, 3, 4]
    assert np.shape(out["decode_tokens_per_s"]) == (2, 4, 4)
    assert all("fits" in line for line in out["fit"])


def test_parse_ints_lists_and_ranges() -> None:
    from edgesim.llm.cli import parse_ints

    assert parse_ints("1,2,4", "--x") == [1, 2, 4]
    assert parse_ints("128:4096:3", "--x") == [128, 2112, 4096]   # inclusive, evenly spaced
    with pytest.raises(UserError, match="--context"):
        parse_ints("a:b", "--context")


def test_prefill_is_no_faster_than_the_int8_peak() -> None:
    cfg = load_config("zoo:qwen2.5-0.5b")
    sim = simulate_llm(cfg, RPI5, ["q4"], [1, 4], [1], prompt_len=256)
    # 24 blocks x 14,909,440 + head 151936 x 896 MACs per token; sdot peak: 2 pipes x 16
    # int8 MACs x 2.4 GHz per core
    macs = 256 * (24 * 14_909_440 + 151936 * 896)
    floor = macs / (2 * 16 * 2.4e9 * np.array([1, 4]))
    assert (sim.ttft_s[0] > floor).all()
    assert sim.ttft_s[0, 0] / sim.ttft_s[0, 1] > 2   # 4 threads: well over 2x faster


def test_compile_dispatch_scans_without_the_decoder_compiler(tmp_path) -> None:
    # every compile asks whether its model is a decoder; the answer must not import the LLM
    # compile machinery (seconds of start-up) nor read the whole file into memory
    code = ("import sys, edgesim.llm.cli as c; "
            f"print(c._is_decoder({str(tmp_path / 'cnn.onnx')!r}), "
            f"c._is_decoder({str(tmp_path / 'lm.onnx')!r}), c._is_decoder('zoo:tiny_lm'), "
            f"c._is_decoder({str(tmp_path / 'empty.onnx')!r}), "
            "'edgesim.llm.compile' in sys.modules)")
    (tmp_path / "cnn.onnx").write_bytes(b"\x08\x07" + b"conv" * 1000)
    (tmp_path / "lm.onnx").write_bytes(b"\x08\x07" + b"x" * 5000 + b"past_key_values.0.key")
    (tmp_path / "empty.onnx").write_bytes(b"")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "True", "True", "False", "False"]
