"""Fuse the decomposed forms exporters emit back into single layers.

Exporters write LayerNorm, RMSNorm, GELU (erf and tanh forms), SiLU and hard-swish as chains
of elementwise ops (ReduceMean -> Sub -> Pow -> ... -> Add beta; Paddle2ONNX's hard-swish as
Add -> Clip -> Mul -> Div, older PyTorch's as HardSigmoid -> Mul). Each pattern here is a
`match_*` function that starts at one layer and walks producers/consumers to collect the chain
and the constants it uses, checking each constant against the value the formula needs. A
generic `closed` check then makes sure no intermediate tensor is used outside the chain or is a
graph output, and `replace_matches` swaps every chain for its fused layer. No general pattern
language: each pattern is plain code (`norm_patterns`, `act_patterns`, `hswish_pattern`; the
machinery is `pattern_match`).
"""

from __future__ import annotations

from compiler.frontend.act_patterns import match_gelu_erf, match_gelu_tanh, match_silu
from compiler.frontend.hswish_pattern import match_hard_swish
from compiler.frontend.norm_patterns import match_layer_norm, match_rms_norm
from compiler.frontend.pattern_match import Pattern, fuse
from compiler.ir import Graph

# LayerNorm before RMSNorm: an RMSNorm chain is the tail end of a LayerNorm chain.
PATTERNS: tuple[Pattern, ...] = (
    match_layer_norm, match_rms_norm, match_gelu_erf, match_gelu_tanh, match_silu,
    match_hard_swish)


def fuse_patterns(g: Graph) -> Graph:
    """Fuse every decomposed LayerNorm, RMSNorm, GELU (erf and tanh forms), SiLU and
    hard-swish in `g`."""
    for pattern in PATTERNS:
        g = fuse(g, pattern)
    return g
