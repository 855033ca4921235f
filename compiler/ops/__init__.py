"""The op tables: one `OpDef` per layer kind and one lowering rule per claimed ONNX op.

Each op family lives in its own module and exports `OPS` (its OpDefs) and `LOWER` (its ONNX
lowering rules); this module assembles the two tables. `SUPPORTED_ONNX_OPS` is the single list
of ONNX ops edgesim claims, which the ONNX backend-node tests iterate over.
"""

from collections.abc import Mapping
from types import MappingProxyType

from compiler.ops import (
    activation,
    conv,
    eltwise,
    gather,
    index,
    linear,
    norm,
    pool,
    reshape,
    resize,
    softmax,
)
from compiler.ops.opdef import LowerRule, OpDef

_FAMILIES = (conv, linear, eltwise, activation, norm, softmax, pool, reshape, gather, resize,
             index)

OPS: Mapping[str, OpDef] = MappingProxyType({op.kind: op for f in _FAMILIES for op in f.OPS})
LOWER: Mapping[str, LowerRule] = MappingProxyType(
    {op_type: rule for f in _FAMILIES for op_type, rule in f.LOWER.items()})
SUPPORTED_ONNX_OPS: tuple[str, ...] = tuple(sorted(LOWER))
# The domain of each claimed op outside the default one (ai.onnx.ml label post-processing).
OP_DOMAINS: Mapping[str, str] = MappingProxyType(
    {op_type: d for f in _FAMILIES for op_type, d in getattr(f, "DOMAINS", {}).items()})


def claims(op_type: str, domain: str) -> bool:
    """Whether `LOWER[op_type]` is the rule for a node of `op_type` in `domain`."""
    want = OP_DOMAINS.get(op_type, "")
    return op_type in LOWER and (domain == want or (not want and domain == "ai.onnx"))
