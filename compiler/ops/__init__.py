"""The op tables: one `OpDef` per layer kind and one lowering rule per claimed ONNX op.

Each op family lives in its own module and exports `OPS` (its OpDefs) and `LOWER` (its ONNX
lowering rules); this module assembles the two tables. `SUPPORTED_ONNX_OPS` is the single list
of ONNX ops edgesim claims, which the ONNX backend-node tests iterate over.
"""

from collections.abc import Mapping
from types import MappingProxyType

from compiler.ops import (
    activation,
    attention,
    conv,
    conv_transpose,
    decoder,
    eltwise,
    gather,
    index,
    linear,
    norm,
    pad,
    pool,
    reduce,
    reshape,
    resize,
    softmax,
)
from compiler.ops.opdef import LowerRule, OpDef

_FAMILIES = (conv, conv_transpose, linear, eltwise, activation, norm, softmax, pool, reduce,
             reshape, pad, gather, resize, index, attention, decoder)

OPS: Mapping[str, OpDef] = MappingProxyType({op.kind: op for f in _FAMILIES for op in f.OPS})
LOWER: Mapping[str, LowerRule] = MappingProxyType(
    {op_type: rule for f in _FAMILIES for op_type, rule in f.LOWER.items()})
SUPPORTED_ONNX_OPS: tuple[str, ...] = tuple(sorted(LOWER))
# The domain of each claimed op outside the default one (ai.onnx.ml label post-processing).
OP_DOMAINS: Mapping[str, str] = MappingProxyType(
    {op_type: d for f in _FAMILIES for op_type, d in getattr(f, "DOMAINS", {}).items()})


# Rules keyed (domain, op_type), for contrib ops whose name is also an ONNX op's.
DOMAIN_LOWER: Mapping[tuple[str, str], LowerRule] = MappingProxyType(
    {k: rule for f in _FAMILIES for k, rule in getattr(f, "DOMAIN_LOWER", {}).items()})


def rule_for(op_type: str, domain: str) -> LowerRule | None:
    """The lowering rule of a node of `op_type` in `domain`, None if unsupported."""
    if (domain, op_type) in DOMAIN_LOWER:
        return DOMAIN_LOWER[(domain, op_type)]
    want = OP_DOMAINS.get(op_type, "")
    plain = op_type in LOWER and (domain == want or (not want and domain == "ai.onnx"))
    return LOWER[op_type] if plain else None


def claims(op_type: str, domain: str) -> bool:
    """Whether edgesim has a lowering rule for a node of `op_type` in `domain`."""
    return rule_for(op_type, domain) is not None
