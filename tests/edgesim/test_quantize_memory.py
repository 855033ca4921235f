"""`quantize_model` frees the float weights the quantised layers replace before emission
(issue 17: peak memory of `quantize --bits 4`), and the file it writes is byte for byte the
one written while they were still held; lowering forgets a MatMul weight once its transposed
`linear` copy exists."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.lower import lower_model
from compiler.ir import is_placeholder
from edgesim import quantize as q
from edgesim.loading import load_graph
from edgesim.zoo.transformer import llama, minilm

TINY_MINILM = minilm(vocab=96, seq=8, d=32, depth=1, heads=2, hidden=64)
TINY_LLAMA = llama(vocab=128, seq=8, d=32, depth=1, heads=2, hidden=64)
CASES = [("zoo:digits_cnn", 4), ("zoo:digits_cnn", 8), ("zoo:digits_transformer", 4),
         ("minilm", 4), ("llama", 4), ("llama", 8),
         ("zoo:digits_cnn", {"conv1": 4, "fc": [8, 8]})]


def _model(name: str) -> object:
    return {"minilm": TINY_MINILM, "llama": TINY_LLAMA}.get(name, name)


def _bits(name: str, bits: object) -> object:
    if not isinstance(bits, dict):
        return bits
    layers = [layer.name for layer in load_graph(_model(name)).layers]
    return {next(n for n in layers if n.startswith(k)): v for k, v in bits.items()}


@pytest.mark.parametrize(("name", "bits"), CASES)
def test_the_file_is_the_one_written_with_the_float_weights_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, bits: object) -> None:
    model, assignment = _model(name), _bits(name, bits)
    calib = None if bits == 4 else 4
    check = "report" if bits == 4 else "off"  # W4: the kernel rows read the graph too
    new = q.quantize_model(model, assignment, calib_random=calib, out=tmp_path / "new.onnx",
                           kernel_check=check)
    monkeypatch.setattr(q, "spent_weights", lambda g: g)  # the old path: nothing dropped
    old = q.quantize_model(model, assignment, calib_random=calib, out=tmp_path / "old.onnx",
                           kernel_check=check)
    assert (tmp_path / "new.onnx").read_bytes() == (tmp_path / "old.onnx").read_bytes()
    assert new == replace(old, out=new.out)  # the same report too


def _two_readers() -> onnx.ModelProto:
    """A table read by a Gather and by an Add, and a MatMul weight read only by its linear
    layer (through a transposed copy)."""
    f = TensorProto.FLOAT
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w")
    u = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "u")
    nodes = [helper.make_node("Gather", ["w", "ids"], ["a"], name="gather"),
             helper.make_node("MatMul", ["a", "u"], ["b"], name="mm"),
             helper.make_node("Add", ["z", "w"], ["c"], name="add")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [4]),
                     helper.make_tensor_value_info("z", f, [16, 32])],
        [helper.make_tensor_value_info("b", f, [4, 32]),
         helper.make_tensor_value_info("c", f, [16, 32])], [w, u])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_weights_no_float_layer_reads_become_placeholders() -> None:
    from compiler.passes.quantize import QuantOptions, quantize

    g = load_graph(_two_readers())
    bits = np.array([[32 if layer.kind == "eltwise" else 4, 32] for layer in g.layers])
    qg = quantize(g, bits, None, QuantOptions())
    kinds = {layer.kind: layer for layer in qg.layers}
    assert kinds["gather"].quant.w_bits == kinds["linear"].quant.w_bits == 4
    assert kinds["gather"].inputs[0] == "w" and "w" in kinds["eltwise"].inputs
    gone = {kinds["linear"].inputs[1]}  # w stays: the float Add reads it
    assert q.replaced_weights(qg) == gone
    slim = q.spent_weights(qg)
    for t, w in slim.weights.items():
        assert is_placeholder(w) == (t in gone)
        assert w.shape == qg.weights[t].shape and w.dtype == qg.weights[t].dtype
        if t not in gone:
            assert w is qg.weights[t]
    without_add = replace(qg, layers=tuple(x for x in qg.layers if x.kind != "eltwise"))
    assert q.replaced_weights(without_add) == gone | {"w"}


def test_lowering_forgets_a_matmul_weight_once_its_transposed_copy_exists() -> None:
    """A MatMul weight [in, out] is spent once its linear layer holds the [out, in] copy:
    when the next node lowers, only the copy is among the constants (before, both lived
    until `drop_dead` at the end); a weight another node still reads stays."""
    import compiler.frontend.lower as lower

    present: dict[str, set[str]] = {}
    real = lower._lower_node

    def spy(node: onnx.NodeProto, name: str, specs: object, consts: dict) -> object:
        present[name] = set(consts)
        return real(node, name, specs, consts)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lower, "_lower_node", spy)
        g = lower_model(_two_readers(), "g")
    assert present["mm"] >= {"u", "w"}
    assert "u" not in present["add"] and "w" in present["add"]  # u spent, w read by the Add
    assert "u" not in g.weights
