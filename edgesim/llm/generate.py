"""Greedy generation with a KV-cache decoder in onnxruntime, with a byte-level vocabulary.

The model has the interface `edgesim.zoo.decoder` writes (`input_ids`, `past_key_values.{i}.
key|value` in, `logits`, `present.{i}.key|value` out). Tokens are UTF-8 bytes (vocab >= 256):
no tokenizer file is needed. Prefill runs the prompt at once; each new token then runs alone
with the cache, and the decode rate is timed over those single-token runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgesim.errors import UserError
from edgesim.evaluate import session

PAST = "past_key_values."


@dataclass(frozen=True)
class Generation:
    """Generated text and the measured speed."""

    prompt: str
    text: str
    tokens: tuple[int, ...]
    prefill_s: float
    decode_s: float            # total over the decoded tokens
    threads: int

    @property
    def tokens_per_s(self) -> float:
        """Measured decode tokens/s (0 when nothing was decoded after the first token)."""
        n = len(self.tokens) - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else 0.0


def empty_past(sess: ort.InferenceSession, batch: int = 1) -> dict[str, np.ndarray]:
    """Zero-length past K/V for every cache input of `sess`."""
    past = [i for i in sess.get_inputs() if i.name.startswith(PAST)]
    if not past:
        raise UserError("model", "has no past_key_values.* inputs (not a KV-cache decoder)")
    dtype = {"tensor(float16)": np.float16}
    return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype.get(i.type, np.float32))
            for i in past}


def step(sess: ort.InferenceSession, ids: np.ndarray,
         past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One run: logits [N, S, V] and the next step's past (the presents renamed)."""
    names = [o.name for o in sess.get_outputs()]
    feeds = {"input_ids": ids, **past, **position_feeds(sess, ids, past)}
    out = dict(zip(names, sess.run(None, feeds)))
    nxt = {PAST + n[len("present."):]: v for n, v in out.items() if n.startswith("present.")}
    return out["logits"], nxt


def position_feeds(sess: ort.InferenceSession, ids: np.ndarray,
                   past: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The exporters' other inputs, where the model takes them: `attention_mask` (all ones
    over past + new tokens: onnxruntime-genai derives GroupQueryAttention's lengths from it)
    and `position_ids` (past .. past + new - 1)."""
    names = {i.name for i in sess.get_inputs()}
    n, s = ids.shape
    p = next(iter(past.values())).shape[2] if past else 0
    out = {}
    if "attention_mask" in names:
        out["attention_mask"] = np.ones((n, p + s), np.int64)
    if "position_ids" in names:
        out["position_ids"] = np.broadcast_to(np.arange(p, p + s, dtype=np.int64), (n, s)).copy()
    return out


def encode(text: str) -> np.ndarray:
    """UTF-8 bytes as token ids, int64 [1, n]."""
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int64)[None]


def decode_bytes(tokens: list[int] | tuple[int, ...]) -> str:
    """Token ids (bytes; ids >= 256 dropped) as text, invalid UTF-8 replaced."""
    return bytes(t for t in tokens if t < 256).decode("utf-8", errors="replace")


def generate(model: str | Path | bytes, prompt: str, max_new_tokens: int,
             threads: int | None = None) -> Generation:
    """Greedy-decode `max_new_tokens` bytes after `prompt`.

    Raises:
        UserError: empty prompt, a bad token count, or a model without the KV-cache interface.
    """
    if not prompt:
        raise UserError("--prompt", "must not be empty")
    if max_new_tokens < 1:
        raise UserError("--max-new-tokens", f"must be >= 1, got {max_new_tokens}")
    sess, ids = session(model, threads), encode(prompt)
    t0 = time.perf_counter()
    logits, past = _step_at(sess, ids, empty_past(sess), 0)
    tokens = [int(logits[0, -1].argmax())]
    t1 = time.perf_counter()
    for i in range(max_new_tokens - 1):
        logits, past = _step_at(sess, np.array([[tokens[-1]]], np.int64), past, ids.shape[1] + i)
        tokens.append(int(logits[0, -1].argmax()))
    t2 = time.perf_counter()
    return Generation(prompt, decode_bytes(tokens), tuple(tokens), t1 - t0, t2 - t1,
                      threads or 0)


def _step_at(sess: ort.InferenceSession, ids: np.ndarray, past: dict[str, np.ndarray],
             start: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`step` of the tokens at positions start.. ; a run onnxruntime refuses is the user's
    sequence outrunning the model (its position tables end: the zoo's tiny_lm at 512)."""
    try:
        return step(sess, ids, past)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        last = start + ids.shape[1]
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError("--max-new-tokens", f"onnxruntime failed on positions {start}..{last - 1}"
                        f" (prompt + new tokens; longer than the model was built for?): "
                        f"{first[:200]}") from None


@dataclass(frozen=True)
class TextScore:
    """Next-byte quality of a decoder on a text: mean NLL (nats per byte) and its predictions."""

    nll: float
    predictions: np.ndarray    # int64 [windows, seq - 1]: argmax next byte at each position

    @property
    def perplexity(self) -> float:
        """exp(mean NLL) per byte."""
        return float(np.exp(self.nll))

    def agreement(self, other: TextScore) -> float:
        """Share of positions where both predict the same next byte."""
        return float((self.predictions == other.predictions).mean())


def score_text(model: str | Path | bytes, data: np.ndarray, seq: int = 128) -> TextScore:
    """Mean next-byte NLL over non-overlapping windows of `seq` bytes of `data` (one batch,
    no cache), and the argmax predictions for next-token agreement."""
    sess = session(model)
    n = len(data) // seq
    ids = np.asarray(data[: n * seq], np.int64).reshape(n, seq)
    batch = next(i.shape[0] for i in sess.get_inputs() if i.name == "input_ids")
    if batch == 1:   # a model exported at batch 1: one window a run
        logits = np.concatenate([step(sess, w[None], empty_past(sess))[0] for w in ids])
    else:
        logits, _ = step(sess, ids, empty_past(sess, n))
    z = logits[:, :-1].astype(np.float64)
    logz = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    picked = np.take_along_axis(z, ids[:, 1:, None], -1)[..., 0]
    return TextScore(float((logz - picked).mean()), z.argmax(-1))
