"""A tied head and its embedding share one packed table (issue 14 item 3, brief E14 item 1).

Oracles: onnxruntime runs both sides. The tied model (head MatMulNBits, embedding
GatherBlockQuantized over the head's own initializers) must give the logits of an untied model
whose head is the same MatMulNBits and whose embedding is a float Gather of the table
dequantised by hand from the packed codes (per block: (code - zero point) * scale, written out
here, not by the packer's own inverse). The file must hold the table once: its initializer
bytes are the untied twin's minus one table.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import numpy_helper

from compiler.packing import pack_matmulnbits, unpack_matmulnbits
from edgesim.errors import UserError
from edgesim.llm.formats import parse_format
from edgesim.llm.generate import empty_past, session, step
from edgesim.zoo.decoder import EMBED, DecoderShape, kv_decoder

TIED = DecoderShape(vocab=256, hidden=64, layers=1, heads=4, kv_heads=2, intermediate=96,
                    max_context=64, tied=True)
UNTIED = dataclasses.replace(TIED, tied=False)
IDS = np.arange(0, 256, 5, dtype=np.int64)[None]


def _weights() -> dict[str, np.ndarray]:
    model = kv_decoder(UNTIED, seed=7)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.name.endswith((".weight", ".bias"))}


def _dequantised(table: np.ndarray, fmt: str) -> np.ndarray:
    """The [V, D] table as the packed codes say: (code - zp) * scale per block of D."""
    f = parse_format(fmt)
    blob = pack_matmulnbits(table.T, f.bits, f.block, symmetric=not f.zero_point)
    codes, zps = unpack_matmulnbits(blob)           # [D, V], [V, k_blocks]
    block_of = np.arange(table.shape[1]) // f.block
    deq = (codes.T.astype(np.int32) - zps[:, block_of]) * blob.scales[:, block_of]
    return deq.astype(np.float32)


def _logits(model: object) -> np.ndarray:
    sess = session(model.SerializeToString())  # type: ignore[attr-defined]
    return step(sess, IDS, empty_past(sess))[0]


def _init_bytes(model: object, prefix: str = "") -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer  # type: ignore[attr-defined]
               if t.name.startswith(prefix))


@pytest.mark.parametrize("fmt", ["q4", "q8", "q2z", "q4b128z"])
def test_tied_table_matches_a_gather_of_the_dequantised_table(fmt: str) -> None:
    w = _weights()
    emb = w.pop("embed_tokens.weight")
    w.pop("lm_head.weight")
    tied = kv_decoder(TIED, {"lm_head": fmt}, weights=w | {"embed_tokens.weight": emb})
    ops = [n.op_type for n in tied.graph.node]
    assert ops.count("GatherBlockQuantized") == 1 and ops.count("Gather") == 2  # RoPE cos/sin
    deq = _dequantised(emb, fmt)
    assert not np.allclose(deq, emb, atol=1e-3)
    twin = kv_decoder(UNTIED, {"lm_head": fmt},
                      weights=w | {"embed_tokens.weight": deq, "lm_head.weight": emb.T.copy()})
    got, want = _logits(tied), _logits(twin)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("fmt", ["q4", "q2z", "q4b128z"])
def test_tied_file_holds_one_table(fmt: str) -> None:
    w = _weights()
    emb = w.pop("embed_tokens.weight")
    head = w.pop("lm_head.weight")
    tied = kv_decoder(TIED, {"lm_head": fmt}, weights=w | {"embed_tokens.weight": emb})
    two = kv_decoder(UNTIED, {"lm_head": fmt, EMBED: fmt},
                     weights=w | {"embed_tokens.weight": emb, "lm_head.weight": head})
    table = parse_format(fmt).stored_bytes(TIED.hidden, TIED.vocab)
    assert not any(t.name.startswith(EMBED) for t in tied.graph.initializer)
    assert _init_bytes(tied, "lm_head.") == table
    assert _init_bytes(two, EMBED) == table
    assert _init_bytes(tied) == _init_bytes(two) - table


def test_stored_bytes_pads_k_to_whole_blocks() -> None:
    # hand count: 64 codes in one 128-block -> 64 bytes of nibbles + one fp32 scale + one
    # packed 4-bit zero point per row
    assert parse_format("q4b128z").stored_bytes(64, 10) == 10 * (64 + 4 + 1)
    assert parse_format("q2z").stored_bytes(64, 3) == 3 * (2 * 8 + 2 * 4 + 1)
    assert parse_format("fp32").stored_bytes(64, 3) == 64 * 3 * 4


def test_tied_table_refuses_a_second_format() -> None:
    with pytest.raises(UserError, match="embed_tokens"):
        kv_decoder(TIED, {"lm_head": "q4", EMBED: "q8"})
