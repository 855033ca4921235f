"""The ONNX frontend's If handling, against onnxruntime on the original model: a constant
condition is inlined, a data condition runs both branches and Where picks, a mode input or a
condition of several values is refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.frontend.clean import clean
from compiler.frontend.load import load
from tests.compiler.load_models import F, assert_same_as_ort, init, model, x_feed

# --- If ---------------------------------------------------------------------------------------


def _branches(tag):
    """then: x + c (with its own initializer c); else: -(t * t), t from the outer scope.
    Both Ifs' branches use the internal name 'h', which must not collide once inlined."""
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", f"c{tag}"], ["h"]),
         helper.make_node("Identity", ["h"], [f"o{tag}"])], "then", [],
        [helper.make_tensor_value_info(f"o{tag}", F, ["N", 3])],
        [init(f"c{tag}", np.float32(3.0))])
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["t", "t"], ["h"]), helper.make_node("Neg", ["h"], [f"e{tag}"])],
        "else", [], [helper.make_tensor_value_info(f"e{tag}", F, ["N", 3])])
    return {"then_branch": then_g, "else_branch": else_g}


def _if_model(cond_nodes, cond_inputs=()):
    """z = If(cond) + If(cond) + t with t = Relu(x) outside (see `_branches`)."""
    nodes = [*cond_nodes, helper.make_node("Relu", ["x"], ["t"]),
             helper.make_node("If", ["cond"], ["y"], name="if0", **_branches(0)),
             helper.make_node("If", ["cond"], ["y1"], name="if1", **_branches(1)),
             helper.make_node("Sum", ["y", "y1", "t"], ["z"])]
    return model(nodes, [("x", F, ["N", 3]), *cond_inputs], [("z", F, ["N", 3])])


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_constant_condition_is_inlined(cond):
    m = _if_model([helper.make_node("Constant", [], ["cond"],
                                    value=numpy_helper.from_array(np.array(cond)))])
    cleaned = clean(m).model
    ops = [n.op_type for n in cleaned.graph.node]
    assert "If" not in ops and "Constant" not in ops
    assert ("Add" if cond else "Mul") in ops
    assert [o.name for o in cleaned.graph.output] == ["z"]
    onnx.checker.check_model(cleaned)  # still valid: the two branches' 'h' no longer collide
    made = [t for n in cleaned.graph.node for t in n.output]
    assert len(made) == len(set(made)) and "h" in made and "if1/h" in made
    assert_same_as_ort(m, x_feed(1, 3))


def test_if_condition_from_shape_arithmetic_is_inlined():
    cond_nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["batch"], axis=0),
        helper.make_node("Equal", ["batch", "one"], ["cond"]),
    ]
    m = _if_model(cond_nodes)
    m.graph.initializer.extend([init("zero", np.int64(0)), init("one", np.int64(1))])
    cleaned = clean(m).model
    assert "If" not in [n.op_type for n in cleaned.graph.node]
    assert "Add" in [n.op_type for n in cleaned.graph.node]  # batch 1 == 1: then branch
    g = assert_same_as_ort(m, x_feed(1, 3))
    assert g.notes == ("input 'x': batch dimension 'N' set to 1",)


@pytest.mark.parametrize("score", [0.9, 0.1])
def test_if_on_input_data_runs_both_branches_and_selects(score):
    """openWakeWord's hey_jarvis: a score gates a verifier. Both branches run, Where picks."""
    m = _if_model([helper.make_node("Greater", ["score", "half"], ["cond"])],
                  cond_inputs=[("score", F, [])])
    m.graph.initializer.append(init("half", np.float32(0.5)))
    g = assert_same_as_ort(m, {**x_feed(1, 3), "score": np.array(score, np.float32)})
    cleaned = clean(m).model
    ops = [n.op_type for n in cleaned.graph.node]
    assert "If" not in ops and ops.count("Where") == 2 and {"Add", "Mul"} <= set(ops)
    onnx.checker.check_model(cleaned)
    assert [n for n in g.notes if n.startswith("If ")] == [
        f"If {name}: its condition depends on the input data, so both branches run and Where "
        "picks each output (costs count both)" for name in ("if0", "if1")]


def test_if_on_a_condition_of_several_values_is_refused_naming_it():
    """hey_jarvis at batch 4: its score [4, 1] gates the If, which onnxruntime refuses too."""
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["o"])], "then", [],
                               [helper.make_tensor_value_info("o", F, [4, 1])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, [4, 1])])
    nodes = [helper.make_node("Greater", ["x", "half"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="gate", then_branch=then_g,
                              else_branch=else_g)]
    m = model(nodes, [("x", F, [4, 1])], [("y", F, [4, 1])], [init("half", np.float32(0.5))])
    with pytest.raises(ModelError, match=r"^gate: If condition 'cond' has shape \(4, 1\); an If "
                                         r"takes one value"):
        load(m)


@pytest.mark.parametrize("mode", [TensorProto.BOOL, TensorProto.INT64])
def test_if_on_a_mode_input_is_left_to_be_pinned(mode):
    """An If on a bool or integer input (silero's sample rate: a mode, not data) is not run
    both ways: it stays unsupported until the user pins that input (`--input-value`)."""
    cond = ([] if mode == TensorProto.BOOL
            else [helper.make_node("Equal", ["sr", "k16"], ["cond"])])
    m = _if_model(cond, cond_inputs=[("cond" if mode == TensorProto.BOOL else "sr", mode, [])])
    if mode == TensorProto.INT64:
        m.graph.initializer.append(init("k16", np.int64(16000)))
    with pytest.raises(ModelError, match=r"unsupported ops: If \(nodes if0, if1\)"):
        load(m)


def test_if_on_data_whose_branches_differ_in_shape_is_refused():
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["o"])], "then", [],
                               [helper.make_tensor_value_info("o", F, [1, 3])])
    else_g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], keepdims=0)],
                               "else", [], [helper.make_tensor_value_info("e", F, [])])
    nodes = [helper.make_node("Greater", ["score", "half"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="gate", then_branch=then_g,
                              else_branch=else_g)]
    m = model(nodes, [("x", F, [1, 3]), ("score", F, [])], [("y", F, [1, 3])],
              [init("half", np.float32(0.5))])
    with pytest.raises(ModelError, match=r"gate: If output 'y': the condition depends on the "
                                         r"input data and the branches give shapes \(1, 3\) and "
                                         r"\(\)"):
        load(m)
