"""Small-LLM prediction benchmarks; prints JSON.

(a) speed: `simulate_llm` for a Llama-3.2-1B-shaped decoder over 64 context lengths x 3 formats
    x 4 thread counts on the Pi 5 target, median wall time of repeated calls after a warm-up
    (goal < 1 s).
(b) Pi 5 predictions: decode tokens/s and prompt tokens/s (pp512 = 512 / TTFT(512)) at 1, 2
    and 4 threads for Qwen2.5-0.5B- and 1.5B-shaped decoders at q4 / q8 (MatMulNBits
    CompInt8: prefill GEMMs from `hwmodels.kernels.cpu_nbits`).
(c) vs published: every row of bench/llm_published.csv (llama.cpp on a Pi 5, cited) next to
    two predictions: with llama.cpp's kernels, bytes and logits (its format's bits per weight
    incl. scales, its kernel family: `predict_llama_cpp`), and as onnxruntime would run our
    nearest format (`predict_onnxruntime`); median |error| per metric. Nothing is fitted.
(d) this machine: `bench_llm_here.report` -- tiny_lm and a SmolLM-135M-shaped decoder, q4,
    predicted vs measured prefill and decode at 1 and 2 threads, interleaved rounds, medians,
    the load average per round.

Usage: python bench/bench_llm.py [--repeats 20] [--skip-measure]

On a shared machine, measured rates at 2 threads suffer from other processes' load, and the
probe's fork/join overhead is measured under the same load.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.errors import UserError  # noqa: E402
from edgesim.llm import check_fit, footprint, load_config, simulate_llm  # noqa: E402
from edgesim.llm.config import DecoderConfig  # noqa: E402
from edgesim.llm.formats import parse_format  # noqa: E402
from edgesim.llm.phases import (  # noqa: E402
    decode_compute_s,
    overhead_s,
    prefill_s,
    token_time_s,
)
from hwmodels.cpu import CpuTarget  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

# Published Raspberry Pi 5 rows (Cortex-A76 @ 2.4 GHz, llama.cpp CPU backend), with how each
# llama.cpp format maps onto ours: bits per weight incl. scales (block_q4_0: 16 B of nibbles +
# an fp16 scale per 32 = 4.5; block_q8_0 8.5; for rows citing a GGUF size, that size: every
# weight is read per token, the tied table being the head), the head's format, and the
# kernel family (Q4_0 on a dotprod core is repacked to 4x4 and run by sdot GEMM/GEMV kernels,
# the family of KleidiAI's qai8dxp_qsi4c32p that onnxruntime runs for MatMulNBits q4)
PUBLISHED_CSV = Path(__file__).with_name("llm_published.csv")
# llama-quantize gives the (tied) output table Q6_K, falling back to Q8_0 when its rows are not
# a multiple of 256 (Qwen2.5-0.5B: 896)
GGUF_HEAD_BITS = {"Q8_0": 8.5, "Q6_K": 6.5625}
# the head's kernel: a Q8_0 head runs llama.cpp's Q8_0 kernels (cpu_nbits.GGML_Q8_0_*); Q6_K
# has no kernel model here, so a Q6_K head is costed with the body's kernel (assumed)
HEAD_FORMATS = {"Q8_0": "q8"}
# published rows of models the zoo ships no config for: Llama-2-7B's config.json
EXTRA_CONFIGS = {"llama-2-7b": {"name": "llama-2-7b", "hidden_size": 4096,
                                "num_hidden_layers": 32, "num_attention_heads": 32,
                                "num_key_value_heads": 32, "intermediate_size": 11008,
                                "vocab_size": 32000, "tie_word_embeddings": False}}
TMAC_NOTE = ("T-MAC (arXiv 2407.00088, github.com/microsoft/T-MAC) reports ~11 tok/s on a "
             "Raspberry Pi 5 for BitNet-b1.58-3B; no Qwen2.5 figure, so it is not compared here")


def bench_speed(repeats: int) -> dict:
    cfg, target = load_config("zoo:llama-3.2-1b"), load_target("rpi5")
    contexts = np.linspace(64, 8192, 64).astype(int)
    args = (cfg, target, ["q4", "q8", "fp32"], [1, 2, 3, 4], contexts)
    simulate_llm(*args)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sim = simulate_llm(*args)
        times.append(time.perf_counter() - t0)
    return {"model": cfg.name, "points": int(sim.decode_s.size), "contexts": len(contexts),
            "formats": 3, "threads": 4, "median_s": statistics.median(times),
            "max_s": max(times), "goal_s": 1.0}


def predictions() -> list[dict]:
    target, rows = load_target("rpi5"), []
    for name in ("qwen2.5-0.5b", "qwen2.5-1.5b"):
        cfg = load_config(f"zoo:{name}")
        for fmt in ("q4", "q8"):
            dec = simulate_llm(cfg, target, [fmt], [1, 2, 4], [64], prompt_len=128)
            pp = simulate_llm(cfg, target, [fmt], [1, 2, 4], [64], prompt_len=512)
            rows.append({"model": name, "format": fmt, "threads": [1, 2, 4],
                         "decode_tok_s_at_ctx64": dec.tokens_per_s[0, :, 0].round(2).tolist(),
                         "ttft_s_prompt128": dec.ttft_s[0].round(3).tolist(),
                         "pp512_tok_s": (512 / pp.ttft_s[0]).round(1).tolist()})
    return rows


def published_rows() -> list[dict[str, str]]:
    with PUBLISHED_CSV.open(newline="") as f:
        return list(csv.DictReader(f))


def llama_weight_bytes(cfg: DecoderConfig, row: dict[str, str]) -> float:
    """Weight bytes llama.cpp reads per decoded token in the row's format."""
    bpw = row["their_bits_per_weight"]
    if bpw.startswith("gguf:"):
        return float(bpw[5:])
    blocks = cfg.layers * cfg.block_linear_params() * float(bpw) / 8.0
    return blocks + cfg.embedding_params() * GGUF_HEAD_BITS[row["their_head"]] / 8.0


def llama_cpp_runtime(kernel_family: str) -> str:
    """The `cpu_nbits` runtime of a row's llama.cpp kernel family: builds that run Q4_0
    unrepacked call vec_dot per row, with sdot or (built without dotprod) emulating it; Q4_K
    repacked 8x4 has its own GEMV."""
    if "q4_K_8x4" in kernel_family:
        return "llama.cpp q4_K"
    if "vec_dot_q4_0" not in kernel_family:
        return "llama.cpp"
    return "llama.cpp vec_dot no-dotprod" if "no dotprod" in kernel_family else "llama.cpp vec_dot"


def predict_llama_cpp(cfg: DecoderConfig, target: CpuTarget, row: dict[str, str]) -> float:
    """tokens/s of the row's workload with llama.cpp's kernels, bytes and logits (last only);
    each tensor with the kernel its format gets (a Q8_0 head: Q8_0's, `HEAD_FORMATS`)."""
    t, fmt, ctx = int(row["threads"]), parse_format(row["our_format"]), int(row["context"])
    head = parse_format(HEAD_FORMATS.get(row["their_head"], row["our_format"]))
    ts = np.array([t])
    if row["metric"] == "pp512":
        return 512.0 / float(prefill_s(cfg, target, fmt, head, ts, ctx, "llama.cpp", 1)[0])
    kv = 2 * cfg.layers * cfg.kv_dim * 2.0 * ctx  # llama.cpp's default f16 KV cache
    nbytes = llama_weight_bytes(cfg, row) + kv + cfg.vocab * 4.0
    runtime = llama_cpp_runtime(row["kernel_family"])
    comp = decode_compute_s(cfg, target, fmt, head, ts, np.array([ctx]), runtime)[0, 0]
    step = token_time_s(np.array(nbytes), np.array(comp), target, ts)[0][0]
    return 1.0 / (step + overhead_s(cfg, target, ts)[0])


def predict_onnxruntime(cfg: DecoderConfig, target: CpuTarget, row: dict[str, str]) -> float:
    """tokens/s of the row's workload as onnxruntime runs our format (all prompt logits)."""
    t, ctx = int(row["threads"]), int(row["context"])
    sim = simulate_llm(cfg, target, [row["our_format"]], [t], [ctx], prompt_len=ctx)
    if row["metric"] == "pp512":
        return 512.0 / float(sim.ttft_s[0, 0])
    return float(sim.tokens_per_s[0, 0, 0])


def compare() -> dict:
    """Every published row next to both predictions; median |error| per metric."""
    target, out = load_target("rpi5"), []
    for row in published_rows():
        cfg = load_config(EXTRA_CONFIGS.get(row["model"]) or f"zoo:{row['model']}")
        pub = float(row["published_tok_s"])
        lc, ort = predict_llama_cpp(cfg, target, row), predict_onnxruntime(cfg, target, row)
        out.append({**row, "predicted_llama_cpp_kernels": round(lc, 2),
                    "ratio_llama_cpp_kernels": round(lc / pub, 3),
                    "predicted_onnxruntime": round(ort, 2),
                    "ratio_onnxruntime": round(ort / pub, 3)})
    summary = {}
    for metric in sorted({r["metric"] for r in out}):
        rs = [r for r in out if r["metric"] == metric]
        summary[metric] = {
            "rows": len(rs),
            "median_abs_err_llama_cpp_kernels": _med_err(rs, "ratio_llama_cpp_kernels"),
            "median_abs_err_onnxruntime": _med_err(rs, "ratio_onnxruntime")}
    return {"rows": out, "summary": summary}


def _med_err(rows: list[dict], key: str) -> float:
    return round(float(statistics.median(abs(r[key] - 1.0) for r in rows)), 3)


def ram_fit() -> dict[str, str]:
    """The 8B check: Llama-3.1-8B-shaped at q4, KV fp32 at 4096 tokens, on 4 and 8 GiB Pi 5s."""
    cfg, target = load_config("zoo:llama-3.1-8b"), load_target("rpi5")
    fp, out = footprint(cfg, "q4", 4096, 128), {}
    for ram in (4, 8):
        try:
            out[f"{ram}GiB"] = check_fit(fp, cfg.name, target, ram)
        except UserError as e:
            out[f"{ram}GiB"] = f"refused: {e}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-measure", action="store_true", help="no onnxruntime runs (c)")
    args = ap.parse_args()
    rows = predictions()
    out = {"speed": bench_speed(args.repeats), "pi5_predictions": rows,
           "vs_published": compare(), "t_mac": TMAC_NOTE, "ram_fit": ram_fit()}
    if not args.skip_measure:
        from bench_llm_here import report

        out["this_machine"] = report(rounds=3, new_tokens=32)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
