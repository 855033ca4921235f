"""Small-LLM prediction benchmarks; prints JSON.

(a) speed: `simulate_llm` for a Llama-3.2-1B-shaped decoder over 64 context lengths x 3 formats
    x 4 thread counts on the Pi 5 target, median wall time of repeated calls after a warm-up
    (goal < 1 s).
(b) Pi 5 predictions next to published llama.cpp / T-MAC figures: decode tokens/s and prompt
    tokens/s (pp512 = 512 / TTFT(512)) at 1, 2 and 4 threads for Qwen2.5-0.5B- and 1.5B-shaped
    decoders at q4 / q8. llama.cpp's formats are not MatMulNBits; they are compared by bytes per
    weight (Q4_0 4.5 bits ~ q4 5.0 bits; Q8_0 8.5 bits ~ q8 9.0 bits; Q4_K_M ~4.8-5 bits on
    these models ~ q4), see `edgesim.llm.formats`.
(c) this machine: a SmolLM-135M-shaped KV-cache decoder (random weights, q4 MatMulNBits,
    accuracy_level 4) emitted by the zoo and run by `edgesim.llm.generate` in onnxruntime at 1
    and 2 threads (median of 3 runs of 32 decoded tokens after a 32-byte prompt), next to the
    prediction for the probed host target (`hwmodels.probe.probe_host`; the emitted graph
    concatenates past and new K/V, so `share_kv_buffer=False`). Nothing is fitted.

Usage: python bench/bench_llm.py [--repeats 20] [--skip-measure]

On a shared machine, measured rates at 2 threads suffer from other processes' load, and the
probe's fork/join overhead is measured under the same load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.errors import UserError  # noqa: E402
from edgesim.llm import check_fit, footprint, load_config, simulate_llm  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

# Published Raspberry Pi 5 figures (Cortex-A76 @ 2.4 GHz, llama.cpp CPU backend)
PUBLISHED = [
    {"model": "qwen2.5-0.5b", "format": "q4", "their_format": "Q4_0", "threads": 2,
     "decode_tok_s": 33.84,
     "source": "github.com/ggml-org/llama.cpp/discussions/30069 (Pi 5 2 GB, llama-bench: best "
               "decode 33.84 t/s at 2 threads)"},
    {"model": "qwen2.5-0.5b", "format": "q4", "their_format": "Q4_0", "threads": 4,
     "pp512_tok_s": 289.92,
     "source": "github.com/ggml-org/llama.cpp/discussions/30069 (best prompt processing "
               "289.92 t/s at 4 threads)"},
    {"model": "qwen2.5-0.5b", "format": "q4", "their_format": "Q4_K_M", "threads": 4,
     "decode_tok_s": 25.77,
     "source": "github.com/ggml-org/llama.cpp/issues/26484 (Pi 5, 4 threads, 2.4 GHz; a dense "
               "model whose GGUF sizes, Q4_K_M 0.398 GB / Q8_0 0.531 GB, are Qwen2.5-0.5B's)"},
    {"model": "qwen2.5-0.5b", "format": "q8", "their_format": "Q8_0", "threads": 4,
     "decode_tok_s": 19.87, "source": "github.com/ggml-org/llama.cpp/issues/26484"},
]
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


def compare(rows: list[dict]) -> list[dict]:
    out = []
    for pub in PUBLISHED:
        row = next(r for r in rows if (r["model"], r["format"]) == (pub["model"], pub["format"]))
        i = row["threads"].index(pub["threads"])
        key = "decode_tok_s" if "decode_tok_s" in pub else "pp512_tok_s"
        pred = row["decode_tok_s_at_ctx64" if key == "decode_tok_s" else "pp512_tok_s"][i]
        out.append({**pub, "metric": key, "predicted": pred,
                    "ratio_pred_over_published": round(pred / pub[key], 3)})
    return out


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


def measure_here(threads: tuple[int, ...] = (1, 2), runs: int = 3) -> dict:
    from edgesim.llm.generate import generate
    from edgesim.zoo.decoder import DecoderShape, kv_decoder
    from hwmodels.probe import probe_host

    host, cfg = probe_host(), load_config("zoo:smollm-135m")
    shape = DecoderShape(vocab=cfg.vocab, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                         kv_heads=cfg.kv_heads, intermediate=cfg.intermediate, max_context=256)
    model = kv_decoder(shape, "q4").SerializeToString()
    prompt, new = "The quick brown fox jumps over t", 32
    runs_by_t = {t: [generate(model, prompt, new, t) for _ in range(runs)] for t in threads}
    measured = {t: statistics.median(g.tokens_per_s for g in gs) for t, gs in runs_by_t.items()}
    ttft = {t: statistics.median(g.prefill_s for g in gs) for t, gs in runs_by_t.items()}
    ctx = len(prompt) + new // 2   # mean context of the decoded tokens
    sim = simulate_llm(cfg, host, ["q4"], list(threads), [ctx], len(prompt),
                       share_kv_buffer=False)
    return {"model": "smollm-135m-shaped kv_decoder q4", "host": host.name,
            "host_sustained_bandwidth_gbps": host.dram.sustained_bandwidth_gbps,
            "model_mb": round(len(model) / 1e6, 1), "threads": list(threads),
            "predicted_tok_s": sim.tokens_per_s[0, :, 0].round(2).tolist(),
            "measured_tok_s": [round(measured[t], 2) for t in threads],
            "predicted_ttft_s": sim.ttft_s[0].round(4).tolist(),
            "measured_ttft_s": [round(ttft[t], 4) for t in threads],
            "predicted_bytes_per_token_mb": round(float(sim.bytes_per_token[0, 0]) / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-measure", action="store_true", help="no onnxruntime runs (c)")
    args = ap.parse_args()
    rows = predictions()
    out = {"speed": bench_speed(args.repeats), "pi5_predictions": rows,
           "vs_published": compare(rows), "t_mac": TMAC_NOTE, "ram_fit": ram_fit()}
    if not args.skip_measure:
        out["this_machine"] = measure_here()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
