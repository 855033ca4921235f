"""A decoder's shape without its weights: a Hugging Face-style `config.json`.

Only the fields that set the bytes and MACs of a Llama / Qwen2 / SmolLM decoder are read:
`hidden_size`, `num_hidden_layers`, `num_attention_heads`, `num_key_value_heads` (GQA; default:
as many as the query heads), `intermediate_size` (SwiGLU), `vocab_size`, `tie_word_embeddings`,
`head_dim` (default hidden / heads), `attention_bias` (Qwen2 puts biases on q/k/v, which its
config does not state: `model_type: qwen2` implies it), `max_position_embeddings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgesim.errors import UserError

_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "vocab_size")
CONFIG_PACKAGE = "edgesim.zoo.data"
CONFIG_SUFFIX = ".config.json"


@dataclass(frozen=True)
class DecoderConfig:
    """The shape of a pre-norm decoder with RMSNorm, RoPE, grouped-query attention and SwiGLU."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    attention_bias: bool = False
    max_context: int = 2048

    @property
    def kv_dim(self) -> int:
        """Width of the k (or v) projection: kv_heads * head_dim."""
        return self.kv_heads * self.head_dim

    def layer_linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of every linear layer of one decoder block."""
        d, q, kv, f = self.hidden, self.heads * self.head_dim, self.kv_dim, self.intermediate
        return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}

    def block_linear_params(self) -> int:
        """Weights of one block's linear layers."""
        return sum(i * o for i, o in self.layer_linears().values())

    def embedding_params(self) -> int:
        """Weights of the token embedding table (= of the LM head)."""
        return self.vocab * self.hidden

    def small_params(self) -> int:
        """Norm weights and attention biases: kept in fp32 by every format."""
        bias = self.heads * self.head_dim + 2 * self.kv_dim if self.attention_bias else 0
        return self.layers * (2 * self.hidden + bias) + self.hidden

    def total_params(self) -> int:
        """All parameters, the head counted once when tied (as Hugging Face reports them)."""
        emb = self.embedding_params() * (1 if self.tied else 2)
        return self.layers * self.block_linear_params() + emb + self.small_params()


def config_from_dict(raw: Any, where: str) -> DecoderConfig:
    """Validate a parsed config.json; `where` names the file in errors.

    Raises:
        UserError: a required key is missing or a size is not a positive integer.
    """
    if not isinstance(raw, dict):
        raise UserError(where, "expected a JSON object (a Hugging Face config.json)")
    for key in _REQUIRED:
        if key not in raw:
            raise UserError(where, f"{key}: missing")
    ints = {k: _positive(raw, k, where) for k in _REQUIRED}
    heads = ints["num_attention_heads"]
    kv = _positive(raw, "num_key_value_heads", where, heads)
    if heads % kv:
        raise UserError(where, f"num_key_value_heads: {kv} does not divide {heads} heads")
    return DecoderConfig(
        name=str(raw.get("_name_or_path") or raw.get("name") or Path(where).stem),
        hidden=ints["hidden_size"], layers=ints["num_hidden_layers"], heads=heads, kv_heads=kv,
        head_dim=_positive(raw, "head_dim", where, ints["hidden_size"] // heads),
        intermediate=ints["intermediate_size"], vocab=ints["vocab_size"],
        tied=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=bool(raw.get("attention_bias", raw.get("model_type") == "qwen2")),
        max_context=_positive(raw, "max_position_embeddings", where, 2048))


def _positive(raw: dict, key: str, where: str, default: int | None = None) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise UserError(where, f"{key}: must be a positive integer, got {v!r}")
    return v


def shipped_configs() -> list[str]:
    """Names of the shape-exact configs shipped in the zoo (`zoo:NAME`)."""
    files = resources.files(CONFIG_PACKAGE).iterdir()
    return sorted(p.name[: -len(CONFIG_SUFFIX)] for p in files if p.name.endswith(CONFIG_SUFFIX))


def is_config_ref(ref: str) -> bool:
    """Whether `ref` names a decoder config: a `.json` file or `zoo:NAME` of a shipped config."""
    return ref.endswith(".json") or (ref.startswith("zoo:") and ref[4:] in shipped_configs())


def load_config(ref: str | Path | dict) -> DecoderConfig:
    """A `DecoderConfig` from a config.json path, `zoo:NAME`, or an already-parsed dict.

    Raises:
        UserError: unreadable file, not JSON, or a bad field (the message names the file).
    """
    if isinstance(ref, dict):
        return config_from_dict(ref, "config")
    ref = str(ref)
    if ref.startswith("zoo:"):
        if ref[4:] not in shipped_configs():
            raise UserError(ref, f"no such config; shipped: {', '.join(shipped_configs())}")
        text = resources.files(CONFIG_PACKAGE).joinpath(ref[4:] + CONFIG_SUFFIX).read_text()
        return config_from_dict({"name": ref[4:], **json.loads(text)}, ref)
    try:
        raw = json.loads(Path(ref).read_text())
    except OSError as e:
        raise UserError(ref, f"cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UserError(ref, f"not JSON: {e.msg} at line {e.lineno}") from None
    return config_from_dict(raw, ref)
