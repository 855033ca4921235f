"""The op tables are complete and consistent: one OpDef per kind, lowering rules take the node
and then ONNX attributes by name, and no kind outside `compiler.ir.KINDS` is registered."""

from __future__ import annotations

import inspect

import pytest

from compiler.ir import KIND_CATEGORY, KINDS
from compiler.ops import LOWER, OPS, SUPPORTED_ONNX_OPS


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_all_rules(kind: str) -> None:
    op = OPS[kind]
    assert op.kind == kind
    for rule in ("shape", "forward", "vjp", "facts"):
        assert callable(getattr(op, rule)), f"{kind} lacks a {rule} rule"
    assert kind in KIND_CATEGORY


def test_no_unknown_kinds_registered() -> None:
    assert set(OPS) <= set(KINDS), set(OPS) - set(KINDS)


@pytest.mark.parametrize("op_type", SUPPORTED_ONNX_OPS)
def test_lowering_rule_signature(op_type: str) -> None:
    params = list(inspect.signature(LOWER[op_type]).parameters.values())
    assert params[0].name == "node", f"{op_type}: first parameter must be the node"
    by_keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for p in params[1:]:
        assert p.kind in by_keyword, f"{op_type}: attribute {p.name} cannot be passed by name"


def test_claimed_ops_are_sorted_and_unique() -> None:
    assert list(SUPPORTED_ONNX_OPS) == sorted(set(SUPPORTED_ONNX_OPS))
