"""Predicted vs measured prefill and decode of emitted KV-cache decoders on this machine; prints
JSON.

Models: the trained zoo:tiny_lm and a SmolLM-135M-shaped random-weight zoo decoder, both with
q4 MatMulNBits (block 32, accuracy_level 4), emitted by `edgesim.zoo` into memory. Each is run
by `edgesim.llm.generate` (prefill of the prompt, then one token at a time with the cache) at 1
and 2 intra-op threads; the (model, threads) runs are interleaved round by round so that the
machine's changing load hits every configuration alike, and the 1-minute load average is
recorded per round. Reported: medians over rounds of the decode tokens/s and the prefill time,
next to `simulate_llm` on the probed host target (`hwmodels.probe.probe_host`; the emitted
graph concatenates past and new K/V: `share_kv_buffer=False`) at the mean decode context.
At 1 thread the process-CPU-time rates are reported too: onnxruntime then computes on the
calling thread, so they exclude the time other processes hold the core (this machine is
shared). Nothing is fitted to these measurements.

Usage: python bench/bench_llm_here.py [--rounds 5] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.llm import load_config, simulate_llm  # noqa: E402
from edgesim.llm.config import DecoderConfig  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog; then it "  # 52 bytes = 52 tokens


GEMM_OPS = ("MatMulNBits", "MatMul")


def graph_nodes(model: object) -> tuple[int, int]:
    """(GEMM nodes, other nodes) of an emitted model: the zoo's decomposed graph has many more
    nodes per block than onnxruntime-genai's layout, and each costs its dispatch."""
    ops = [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]
    gemm = sum(op in GEMM_OPS for op in ops)
    return gemm, len(ops) - gemm


def models() -> dict[str, tuple[DecoderConfig, bytes, tuple[int, int]]]:
    """name -> (shape for the prediction, serialized q4 model, its node counts)."""
    from edgesim.zoo.decoder import DecoderShape, decoder_config, kv_decoder
    from edgesim.zoo.trained import TINY_LM_SHAPE, tiny_lm

    smol = load_config("zoo:smollm-135m")
    shape = DecoderShape(vocab=smol.vocab, hidden=smol.hidden, layers=smol.layers,
                         heads=smol.heads, kv_heads=smol.kv_heads,
                         intermediate=smol.intermediate, max_context=256)
    tiny, big = tiny_lm("q4"), kv_decoder(shape, "q4")
    return {"tiny_lm q4 (trained)": (decoder_config(TINY_LM_SHAPE, "tiny_lm"),
                                     tiny.SerializeToString(), graph_nodes(tiny)),
            "smollm-135m-shaped q4 (random)": (smol, big.SerializeToString(), graph_nodes(big))}


@dataclass(frozen=True)
class Run:
    """One generation: wall and process-CPU seconds of the prefill and of the decode."""

    prefill_s: float
    decode_s: float
    prefill_cpu_s: float
    decode_cpu_s: float
    decoded: int

    @property
    def tokens_per_s(self) -> float:
        return self.decoded / self.decode_s

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.decoded / self.decode_cpu_s


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def run_once(blob: bytes, threads: int, new: int) -> Run:
    """Greedy generation as `edgesim.llm.generate` runs it, timed by wall and CPU clocks (at 1
    thread onnxruntime computes on the calling thread, so the CPU clock excludes the time other
    processes hold the core)."""
    from edgesim.llm.generate import empty_past, encode, session, step

    sess = session(blob, threads)
    w0, c0 = _clocks()
    logits, past = step(sess, encode(PROMPT), empty_past(sess))
    tok = int(logits[0, -1].argmax())
    w1, c1 = _clocks()
    for _ in range(new - 1):
        logits, past = step(sess, np.array([[tok]], np.int64), past)
        tok = int(logits[0, -1].argmax())
    w2, c2 = _clocks()
    return Run(w1 - w0, w2 - w1, c1 - c0, c2 - c1, new - 1)


def measure(blobs: dict[str, bytes], threads: tuple[int, ...], rounds: int, new: int) -> dict:
    runs: dict[tuple[str, int], list[Run]] = {(m, t): [] for m in blobs for t in threads}
    load = []
    for _ in range(rounds):
        load.append(os.getloadavg()[0])
        for (name, t), acc in runs.items():
            acc.append(run_once(blobs[name], t, new))
    return {"load_1min_per_round": [round(x, 2) for x in load], "runs": runs}


def report(rounds: int, new_tokens: int) -> dict:
    """Predicted vs measured rows (module docstring) as a JSON-ready dict."""
    from hwmodels.probe import probe_host

    threads = (1, 2)
    host, ms = probe_host(), models()
    got = measure({k: v[1] for k, v in ms.items()}, threads, rounds, new_tokens)
    prompt_len, ctx = len(PROMPT.encode()), len(PROMPT.encode()) + new_tokens // 2
    out = []
    for name, (cfg, blob, nodes) in ms.items():
        sim = simulate_llm(cfg, host, ["q4"], list(threads), [ctx], prompt_len,
                           share_kv_buffer=False, nodes=nodes)
        for i, t in enumerate(threads):
            gs = got["runs"][(name, t)]
            dec = statistics.median(g.tokens_per_s for g in gs)
            pre = statistics.median(g.prefill_s for g in gs)
            p_dec, p_pre = float(sim.tokens_per_s[0, i, 0]), float(sim.ttft_s[0, i])
            cpu = {}
            if t == 1:
                cpu = {"decode_tok_per_cpu_s": round(statistics.median(
                           g.tokens_per_cpu_s for g in gs), 1),
                       "prefill_cpu_s": round(statistics.median(g.prefill_cpu_s for g in gs), 5)}
            out.append({"model": name, "model_mb": round(len(blob) / 1e6, 2), "threads": t,
                        "graph_nodes_gemm_other": list(nodes),
                        **cpu,
                        "decode_tok_s": {"predicted": round(p_dec, 1), "measured": round(dec, 1),
                                         "ratio": round(p_dec / dec, 3),
                                         "measured_all": [round(g.tokens_per_s, 1) for g in gs]},
                        "prefill_s": {"predicted": round(p_pre, 5), "measured": round(pre, 5),
                                      "ratio": round(p_pre / pre, 3),
                                      "measured_all": [round(g.prefill_s, 5) for g in gs]}})
    return {"host": host.name, "host_isa": list(host.isa),
            "host_sustained_bandwidth_gbps": host.dram.sustained_bandwidth_gbps,
            "cores_here": os.cpu_count(), "prompt_tokens": prompt_len,
            "new_tokens": new_tokens, "rounds": rounds,
            "load_1min_per_round": got["load_1min_per_round"], "rows": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    print(json.dumps(report(args.rounds, args.new_tokens), indent=1))


if __name__ == "__main__":
    main()
