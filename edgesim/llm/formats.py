"""Weight and KV-cache formats of a decoder, in onnxruntime's runtime layout.

A quantised linear is `com.microsoft::MatMulNBits` (DESIGN.md): a packed uint8 blob of `bits`
per weight, one scale per block of `block` weights along K in A's dtype (fp32 on CPU: 4 bytes),
and, when asymmetric, a zero point per block packed at `bits`. onnxruntime-genai's CPU int4
models are symmetric (its builder's `int4_is_symmetric` default) with block 32 and
accuracy_level 4. Spelling: `fp32`, `fp16`, or `q<bits>[b<block>][z]` -- `q4` (4-bit, block 32,
symmetric), `q4b128`, `q8`, `q2z` (2-bit, asymmetric).

llama.cpp formats map onto these by bytes per weight: Q4_0 (32 weights in 16 bytes of nibbles +
an fp16 scale, 4.5 bits) ~ `q4` (5 bits: the scale is fp32 here); Q8_0 (8.5 bits) ~ `q8`
(9 bits); Q4_K_M mixes 4.5- and 6.6-bit super-blocks, between `q4` and `q8`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgesim.errors import UserError

NBITS_CHOICES = (2, 4, 8)  # MatMulNBits `bits` onnxruntime 1.32 implements
BLOCKS = (32, 64, 128)     # block sizes plans choose among (onnxruntime-genai's CPU int4: 32)
# The uniform reference format at each bit width: the bench's W2 / W4 / W8 rows
REFERENCE = {2: "q2z", 4: "q4", 8: "q8"}
KV_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}
EMBED = "embed_tokens"   # the plan key of the token embedding table (not a linear)
_SPEC = re.compile(r"q(\d+)(?:b(\d+))?(z?)")


@dataclass(frozen=True)
class WeightFormat:
    """How a linear layer's weights are stored: float (`bits` 32 / 16) or MatMulNBits."""

    name: str
    bits: int
    block: int = 32
    zero_point: bool = False
    scale_bytes: float = 4.0

    @property
    def quantized(self) -> bool:
        """Stored as MatMulNBits (weight-only, blocked)."""
        return self.bits < 16

    def bytes_per_weight(self) -> float:
        """Bytes one weight takes, its share of the block's scale and zero point included."""
        if not self.quantized:
            return self.bits / 8.0
        zp = self.bits / 8.0 if self.zero_point else 0.0
        return self.bits / 8.0 + (self.scale_bytes + zp) / self.block

    def stored_bytes(self, k: int, n: int) -> float:
        """Exact bytes of a [K, N] weight as emitted: float, or MatMulNBits' B [N, k_blocks,
        block * bits / 8] (K padded to whole blocks), fp32 scales [N, k_blocks] and packed
        uint8 zero points [N, ceil(k_blocks * bits / 8)] -- also GatherBlockQuantized's layout
        of a [V = N, D = K] table (`edgesim.zoo.decoder`)."""
        if not self.quantized:
            return k * n * self.bits / 8.0
        blocks = -(-k // self.block)
        zp = -(-blocks * self.bits // 8) if self.zero_point else 0
        return float(n * (blocks * self.block * self.bits // 8 + blocks * self.scale_bytes + zp))


def parse_format(spec: str) -> WeightFormat:
    """A `WeightFormat` from its spelling (module docstring).

    Raises:
        UserError: an unknown spelling, bits MatMulNBits lacks, or a bad block size.
    """
    if spec in ("fp32", "fp16"):
        return WeightFormat(spec, int(spec[2:]))
    m = _SPEC.fullmatch(spec)
    if not m:
        raise UserError(f"format {spec!r}", "expected fp32, fp16 or q<bits>[b<block>][z]")
    bits, block = int(m[1]), int(m[2] or 32)
    if bits not in NBITS_CHOICES:
        raise UserError(f"format {spec!r}", f"bits must be one of {NBITS_CHOICES}")
    if block < 16 or block & (block - 1):
        raise UserError(f"format {spec!r}", "block must be a power of two >= 16")
    return WeightFormat(spec, bits, block, bool(m[3]))


def candidate_formats(bits: tuple[int, ...] = NBITS_CHOICES,
                      blocks: tuple[int, ...] = BLOCKS) -> tuple[str, ...]:
    """Every MatMulNBits format of `bits` x `blocks` x {symmetric, zero points}, spelled.

    A plan over these sees block size and zero points as choices beside the bit width: at
    q4's bytes a layer can trade q4 (block 32) for q4b128z plus a q8b128 elsewhere.
    """
    return tuple(f"q{b}{'' if k == 32 else f'b{k}'}{z}" for b in bits for k in blocks
                 for z in ("", "z"))


def kv_bytes(dtype: str) -> float:
    """Bytes per cached K or V element.

    Raises:
        UserError: an unknown KV-cache dtype.
    """
    if dtype not in KV_BYTES:
        raise UserError(f"kv dtype {dtype!r}", f"must be one of {sorted(KV_BYTES)}")
    return KV_BYTES[dtype]
