"""A float KV-cache decoder from a file: its linears, its shape, and a format plan applied.

Reads the two exporter forms the IR reads (`edgesim.llm.sensitivity`): onnxruntime-genai's
(`com.microsoft::GroupQueryAttention`, attributes `num_heads` / `kv_num_heads`) and the
standard opset-23 one (`Attention`, `q_num_heads` / `kv_num_heads`), plus the zoo's decomposed
graph when its linears carry the zoo's names. A linear is a `MatMul` whose second input is a
2-D float initializer [in, out]; the LM head is the linear with the most outputs (the
vocabulary). A plan rewrites chosen linears into `com.microsoft::MatMulNBits` (accuracy_level
4, the exact round trip `compiler.packing.pack_matmulnbits` writes); float formats stay MatMul.
An untied file's embedding table (the [vocab, hidden] initializer a Gather reads) is a plan
entry too (`EMBED`): quantised, it becomes GatherBlockQuantized (`compiler.emit.nbits_rewrite`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.emit.nbits_rewrite import embedding_gathers, float_linears
from compiler.frontend.load import read
from edgesim.errors import UserError
from edgesim.llm.config import DecoderConfig
from edgesim.llm.formats import EMBED, parse_format

MS = "com.microsoft"
ACCURACY_LEVEL = 4
# (op type, domain) of a decoder block's attention -> its (query heads, KV heads) attributes
ATTENTION_OPS = {("GroupQueryAttention", MS): ("num_heads", "kv_num_heads"),
                 ("Attention", ""): ("q_num_heads", "kv_num_heads")}


@dataclass(frozen=True)
class DecoderFile:
    """A decoder model and what compile needs of it."""

    model: Any                            # onnx.ModelProto
    config: DecoderConfig
    linears: dict[str, tuple[int, int]]   # node name -> (in, out), graph order
    table: str | None = None              # the untied embedding table's initializer

    def params(self) -> dict[str, int]:
        """Weights of each linear."""
        return {n: i * o for n, (i, o) in self.linears.items()}


def _heads(model: Any, where: str) -> tuple[int, int, int]:
    """(attention nodes, query heads, KV heads) from the attention ops' attributes."""
    found = []
    for node in model.graph.node:
        keys = ATTENTION_OPS.get((node.op_type, node.domain))
        if keys:
            attrs = {a.name: a.i for a in node.attribute}
            found.append((int(attrs.get(keys[0], 0)), int(attrs.get(keys[1], 0))))
    if not found or not all(q > 0 and kv > 0 for q, kv in found):
        raise UserError(where, "no GroupQueryAttention / opset-23 Attention node with its head "
                        "counts (num_heads, kv_num_heads); cannot size the decoder")
    return len(found), found[0][0], found[0][1]


def decoder_config(model: Any, shapes: Mapping[str, tuple[int, int]],
                   name: str, where: str) -> DecoderConfig:
    """The decoder's shape from its linears and attention nodes (module docstring)."""
    if not shapes:
        raise UserError(where, "has no float MatMul linears to quantise")
    layers, heads, kv_heads = _heads(model, where)
    hidden, vocab = max(shapes.values(), key=lambda s: s[1])
    outs = [o for i, o in shapes.values() if i == hidden and o != vocab]
    inter = max(outs, default=hidden)
    ins = Counter(i for i, _ in shapes.values())
    q_dim = next((i for i in ins if i not in (hidden, inter)), hidden)  # o_proj's input
    # an exported head is its own [hidden, vocab] initializer even when the checkpoint ties it:
    # tied means no separate [vocab, hidden] table is stored
    tied = not any(len(t.dims) == 2 and t.dims[0] == vocab and t.dims[1] == hidden
                   for t in model.graph.initializer)
    return DecoderConfig(name=name, hidden=hidden, layers=layers, heads=heads,
                         kv_heads=kv_heads, head_dim=q_dim // heads, intermediate=inter,
                         vocab=vocab, tied=tied)


def read_decoder(path: str | Path) -> DecoderFile:
    """A float decoder file, its linears and shape.

    Raises:
        UserError: unreadable, no linears, or no attention node to read the heads from.
    """
    model, where = read(path)
    if not any(i.name.startswith("past_key_values.") for i in model.graph.input):
        raise UserError(where, "not a KV-cache decoder (no past_key_values.* inputs)")
    shapes = float_linears(model)
    cfg = decoder_config(model, shapes, Path(where).stem, where)
    return DecoderFile(model, cfg, shapes, _table(model, cfg))


def _table(model: Any, cfg: DecoderConfig) -> str | None:
    """The initializer of the [vocab, hidden] table a Gather reads (None when tied)."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    return next((n.input[0] for n in embedding_gathers(model)
                 if dims[n.input[0]] == [cfg.vocab, cfg.hidden]), None)


def apply_plan(model: object, plan: Mapping[str, str], table: str | None = None) -> object:
    """A copy of `model` with each planned linear in its format: MatMulNBits (accuracy_level
    4) when quantised, the float MatMul otherwise (`compiler.emit.nbits_rewrite`); the plan's
    `EMBED` format, when quantised, applies to the embedding initializer `table`.

    Raises:
        UserError: the plan names a linear the model does not have, or a table format without
            a `table`.
    """
    from compiler.emit.nbits_rewrite import rewrite_embedding, rewrite_matmuls
    from compiler.errors import ModelError

    fmts = {n: parse_format(f) for n, f in plan.items()}
    emb = fmts.pop(EMBED, parse_format("fp32"))
    nbits = {n: (f.bits, f.block, not f.zero_point) for n, f in fmts.items() if f.quantized}
    try:
        out = rewrite_matmuls(model, nbits, ACCURACY_LEVEL)  # type: ignore[arg-type]
        if not emb.quantized:
            return out
        if table is None:
            raise ModelError(EMBED, "the model has no untied embedding table to quantise")
        return rewrite_embedding(out, table, emb.bits, emb.block, not emb.zero_point)
    except ModelError as e:
        raise UserError("plan", str(e)) from None
