"""drop_dead keeps exactly what the outputs depend on."""

import numpy as np

from compiler.ir import Graph, Layer, Spec, frozen_attrs, readonly
from compiler.passes.drop_dead import drop_dead
from compiler.verify import verify


def test_dead_branch_and_its_weights_go() -> None:
    spec = Spec((2,), "float32")
    relu = frozen_attrs({"fn": "relu"})
    add = frozen_attrs({"fn": "add"})
    layers = (
        Layer("live", "activation", ("x",), ("y",), relu),
        Layer("dead", "eltwise", ("x", "w_dead"), ("z",), add),
        Layer("dead2", "activation", ("z",), ("z2",), relu),
    )
    w = readonly(np.ones(2, np.float32))
    g = Graph("g", ("x",), ("y",), layers, {"w_dead": w}, {t: spec for t in
                                                           ("x", "y", "z", "z2", "w_dead")})
    out = drop_dead(g)
    verify(out)
    assert [layer.name for layer in out.layers] == ["live"]
    assert dict(out.weights) == {}
    assert set(out.types) == {"x", "y"}
    assert drop_dead(out) == out  # idempotent
