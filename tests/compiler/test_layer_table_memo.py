"""`Graph.layer_table` made once per graph: shared by later calls, never carried to the new
graph a pass makes with `dataclasses.replace`."""

from __future__ import annotations

import dataclasses
import math

from compiler.formats import NO_FORMAT
from compiler.frontend import load
from compiler.ir import Quant
from edgesim import zoo


def _conv_macs(g, layer) -> int:  # type: ignore[no-untyped-def]
    """Closed form: output elements x (cin / groups) x kh x kw."""
    w = g.types[layer.inputs[1]].shape
    return math.prod(g.types[layer.outputs[0]].shape) * math.prod(w[1:])


def test_the_table_is_made_once_and_shared() -> None:
    g = load(zoo.build("digits_cnn"))
    first = g.layer_table()
    assert g.layer_table() is first  # the cost models' memo on it is shared too
    assert not first.macs.flags.writeable


def test_a_replaced_graph_gets_its_own_table() -> None:
    g = load(zoo.build("digits_cnn"))
    before = g.layer_table()
    convs = [i for i, x in enumerate(g.layers) if x.kind == "conv"]
    assert before.fmt_code is not None and (before.fmt_code[convs] == NO_FORMAT).all()
    quantised = tuple(dataclasses.replace(x, quant=Quant(w_bits=8, a_bits=8))
                      if x.kind == "conv" else x for x in g.layers)
    after = dataclasses.replace(g, layers=quantised).layer_table()
    assert after is not before
    assert after.fmt_code is not None and (after.fmt_code[convs] != NO_FORMAT).all()
    assert (before.fmt_code[convs] == NO_FORMAT).all()  # the old graph's table is untouched
    head = dataclasses.replace(g, layers=g.layers[:convs[1] + 1]).layer_table()
    assert head.names == tuple(x.name for x in g.layers[:convs[1] + 1])
    assert [int(head.macs[i]) for i in convs[:2]] == [_conv_macs(g, g.layers[i])
                                                      for i in convs[:2]]

