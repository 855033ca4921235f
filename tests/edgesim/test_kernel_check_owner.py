"""`kernel_check._owner` (set lookups over a node name's prefixes) names the layer the
scan over every layer name names: the longest name that is the node's, or its prefix
followed by `_` or `.`, on the name as given or with onnxruntime's suffixes stripped."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgesim.kernel_check import _TOKEN, _owner

PARTS = st.sampled_from(["conv", "Conv", "layer1", "0", "_", ".", "/", "fc", "quant",
                         "_token_3", "_fused_Relu", "_quant", "a"])
NAMES = st.lists(PARTS, min_size=1, max_size=5).map("".join)


def _scan(node_name: str, names: list[str]) -> str | None:
    """The brute-force rule: every layer name tested against the node name."""
    for base in (node_name, _TOKEN.sub("", node_name)):
        best = [n for n in names if base == n or base.startswith((f"{n}_", f"{n}."))]
        if best:
            return max(best, key=len)
    return None


@settings(max_examples=400, deadline=None)
@given(node=NAMES, names=st.lists(NAMES, max_size=8, unique=True))
def test_the_prefix_lookup_names_the_owner_the_scan_names(node, names) -> None:
    assert _owner(node, names) == _scan(node, names)


def test_examples_by_hand() -> None:
    layers = ["conv1/Conv", "conv1/Conv_1", "fc"]
    assert _owner("conv1/Conv_1_quant", layers) == "conv1/Conv_1"  # the longest prefix
    assert _owner("conv1/Conv.bias", layers) == "conv1/Conv"
    assert _owner("fc_token_12", layers) == "fc"
    assert _owner("fcx", layers) is None  # no separator after the name
