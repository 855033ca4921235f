"""The ONNX frontend's loading, validation and clean-up, against onnxruntime on the original model.

Every clean-up case is a small model built here with onnx.helper; where the loaded graph runs,
its outputs are compared with onnxruntime running the ORIGINAL (uncleaned) model.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend.clean import clean
from compiler.frontend.load import load, read
from compiler.frontend.opset import default_opset
from compiler.ir import Spec
from tests.compiler.opcheck import run_ort

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def model(nodes, inputs, outputs, inits=(), opset=17, ir_version=8, value_info=()):
    """A model from nodes; `inputs`/`outputs` are (name, elem_type, dims) triples."""
    vis = [helper.make_tensor_value_info(*i) for i in inputs]
    outs = [helper.make_tensor_value_info(*o) for o in outputs]
    graph = helper.make_graph(nodes, "test", vis, outs, list(inits), value_info=list(value_info))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    return m


def init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def assert_same_as_ort(source, feeds, input_shapes=None, ort_model=None):
    """Load `source` (path or proto) and compare executor outputs with onnxruntime's."""
    g = load(source, input_shapes)
    ours = run(g, feeds)
    oracle = ort_model if ort_model is not None else (
        onnx.load(source) if isinstance(source, str) else source)
    theirs = run_ort(oracle, feeds)
    names = [o.name for o in oracle.graph.output]
    assert sorted(ours) == sorted(names)
    for name, want in zip(names, theirs):
        np.testing.assert_allclose(ours[name], want, rtol=1e-4, atol=1e-5, err_msg=name)
    return g


def x_feed(*shape):
    return {"x": RNG.standard_normal(shape).astype(np.float32)}


# --- Constant nodes ---------------------------------------------------------------------------


def test_constant_nodes_become_initializers_and_match_ort():
    w = RNG.standard_normal((2, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["s"], value_float=2.5),
        helper.make_node("Constant", [], ["shape"], value_ints=[3, 2]),
        helper.make_node("Constant", [], ["k"], value_int=1),
        helper.make_node("Constant", [], ["sp"], sparse_value=helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([5.0, 7.0], np.float32)),
            numpy_helper.from_array(np.array([1, 5], np.int64)), [2, 3])),
        helper.make_node("Add", ["x", "sp"], ["x1"]),
        helper.make_node("Add", ["x1", "w"], ["a"]),
        helper.make_node("Mul", ["a", "s"], ["b"]),
        helper.make_node("Reshape", ["b", "shape"], ["y"]),
    ]
    m = model(nodes, [("x", F, [2, 3])], [("y", F, [3, 2])])
    cleaned = clean(m).model
    assert [n.op_type for n in cleaned.graph.node] == ["Add", "Add", "Mul", "Reshape"]
    inits = {t.name: numpy_helper.to_array(t) for t in cleaned.graph.initializer}
    np.testing.assert_array_equal(inits["w"], w)
    assert inits["s"].dtype == np.float32 and float(inits["s"]) == 2.5
    assert inits["shape"].tolist() == [3, 2] and inits["k"] == 1
    assert inits["sp"].tolist() == [[0, 5, 0], [0, 0, 7]]  # sparse: flat indices 1 and 5
    assert len(m.graph.node) == 9  # the caller's model is untouched
    assert_same_as_ort(m, x_feed(2, 3))


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


# --- opset, value_info, initializer inputs ----------------------------------------------------


def test_opset_11_model_is_upgraded_to_17():
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),
             helper.make_node("Split", ["u"], ["a", "b"], axis=2, split=[1, 2]),
             helper.make_node("Squeeze", ["b"], ["y"], axes=[0])]
    m = model(nodes, [("x", F, [2, 3])], [("a", F, [1, 2, 1]), ("y", F, [2, 2])], opset=11,
              ir_version=6)
    proto, _ = read(m)
    assert default_opset(proto) == 17
    cleaned = clean(proto).model
    assert [len(n.input) for n in cleaned.graph.node] == [2, 2, 2]  # attributes became inputs
    assert_same_as_ort(m, x_feed(2, 3))


def test_opset_conversion_failure_names_the_opset():
    m = model([helper.make_node("Cast", ["x"], ["y"], to="FLOAT")],
              [("x", F, [2])], [("y", F, [2])], opset=1, ir_version=3)
    with pytest.raises(ModelError, match="cannot convert opset 1 to 17"):
        load(m)


def test_newer_opsets_are_left_alone():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [2])], [("y", F, [2])],
              opset=21, ir_version=10)
    assert default_opset(read(m)[0]) == 21


def test_stale_value_info_is_dropped():
    stale = [helper.make_tensor_value_info("a", F, [7, 7, 7])]
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])]
    m = model(nodes, [("x", F, [2, 3])], [("y", F, [2, 3])], value_info=stale)
    assert len(clean(m).model.graph.value_info) == 0
    fresh = onnx.ModelProto()
    fresh.CopyFrom(m)
    del fresh.graph.value_info[:]
    g = assert_same_as_ort(m, x_feed(2, 3), ort_model=fresh)
    assert g.types["a"].shape == (2, 3)


def test_initializers_listed_as_inputs_are_constants():
    w = RNG.standard_normal(3).astype(np.float32)
    m = model([helper.make_node("Add", ["x", "w"], ["y"])],
              [("x", F, [2, 3]), ("w", F, [3])], [("y", F, [2, 3])], [init("w", w)],
              ir_version=3)
    g = assert_same_as_ort(m, x_feed(2, 3))
    assert g.inputs == ("x",)


# --- external data ------------------------------------------------------------------------------


def _external_model(folder, w, location="w.bin"):
    """Save y = x + w with w stored externally in `folder`; return the model path."""
    m = model([helper.make_node("Add", ["x", "w"], ["y"])],
              [("x", F, [4, 8])], [("y", F, [4, 8])], [init("w", w)])
    path = os.path.join(folder, "m.onnx")
    onnx.save(m, path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def _point_external_data_at(path, location):
    m = onnx.load(path, load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(m, path)


def test_external_data_inside_the_folder_loads(tmp_path):
    w = RNG.standard_normal((4, 8)).astype(np.float32)
    path = _external_model(str(tmp_path), w)
    g = assert_same_as_ort(path, x_feed(4, 8))
    np.testing.assert_array_equal(g.weights["w"], w)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_rejected(tmp_path, kind):
    inner = tmp_path / "model"
    inner.mkdir()
    path = _external_model(str(inner), np.ones((4, 8), np.float32))
    (tmp_path / "x").write_bytes(np.zeros(32, np.float32).tobytes())
    location = {"dotdot": "../x", "absolute": str(tmp_path / "x"), "symlink": "link.bin"}[kind]
    if kind == "symlink":
        os.symlink(tmp_path / "x", inner / "link.bin")
    _point_external_data_at(path, location)
    with pytest.raises(ModelError) as err:
        load(path)
    assert err.value.where == f"{path}: initializer w"
    reason = "is an absolute path" if kind == "absolute" else "leaves the model's folder"
    assert err.value.what == f"external data location '{location}' {reason}"


def test_external_data_of_an_in_memory_model_is_rejected(tmp_path):
    path = _external_model(str(tmp_path), np.ones((4, 8), np.float32))
    with pytest.raises(ModelError, match="initializer w"):
        load(onnx.load(path, load_external_data=False))


# --- bad files ----------------------------------------------------------------------------------


def _valid_bytes():
    w = init("w", RNG.standard_normal((16, 16)).astype(np.float32))
    m = model([helper.make_node("Add", ["x", "w"], ["y"])],
              [("x", F, [16, 16])], [("y", F, [16, 16])], [w])
    return m.SerializeToString()


@pytest.mark.parametrize("content", [
    pytest.param(lambda: _valid_bytes()[: len(_valid_bytes()) // 2], id="truncated"),
    pytest.param(lambda: bytes(range(256)) * 4, id="garbage"),
    pytest.param(lambda: b"", id="empty"),
    pytest.param(lambda: b"hello, this is text", id="text"),
])
def test_invalid_files_raise_model_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content())
    with pytest.raises(ModelError, match="not a valid ONNX model") as err:
        load(str(path))
    assert err.value.where == str(path)


def test_missing_file_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        load(tmp_path / "nope.onnx")


def test_checker_failure_names_the_node():
    m = model([helper.make_node("Relu", ["x", "x"], ["y"], name="r1")],
              [("x", F, [2])], [("y", F, [2])])
    with pytest.raises(ModelError) as err:
        load(m)
    assert err.value.where.endswith("node r1")
    assert "input size 2" in err.value.what


# --- input shapes -------------------------------------------------------------------------------


def _image_model(dims):
    return model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, dims)], [("y", F, dims)])


def test_dynamic_batch_defaults_to_one_with_a_note():
    g = assert_same_as_ort(_image_model(["N", 3, 4, 4]), x_feed(1, 3, 4, 4))
    assert g.types["x"].shape == (1, 3, 4, 4)
    assert g.notes == ("input 'x': batch dimension 'N' set to 1",)


def test_dynamic_spatial_dims_need_a_shape():
    with pytest.raises(ModelError) as err:
        load(_image_model(["N", 3, "H", "W"]))
    assert str(err.value) == (
        "input x: dimension 2 ('H') is dynamic; pass --input-shape x=1x3x224x224 (guessed: "
        "'H', 'W' = 224, a common image side; give the sizes you run at)")


def test_example_shape_has_the_inputs_rank():
    m = model([helper.make_node("Gather", ["emb", "ids"], ["y"])],
              [("ids", TensorProto.INT64, ["batch", "seq"])], [("y", F, ["batch", "seq", 4])],
              [init("emb", np.zeros((10, 4), np.float32))])
    with pytest.raises(ModelError, match=r"dimension 1 \('seq'\) is dynamic; pass "
                                         r"--input-shape ids=1x128 \(guessed: 'seq' = 128, a "):
        load(m)


def test_input_shapes_fix_dynamic_dims():
    m = _image_model(["N", 3, "H", "W"])
    g = assert_same_as_ort(m, x_feed(2, 3, 5, 6), input_shapes={"x": (2, 3, 5, 6)})
    assert g.types["y"].shape == (2, 3, 5, 6) and g.notes == ()
    g = load(_image_model([1, 3, 8, 8]), {"x": [1, 3, 8, 8]})  # a fixed dim given as is
    assert g.types["x"].shape == (1, 3, 8, 8)


def test_a_given_shape_that_contradicts_a_fixed_dim_is_refused():
    """onnxruntime refuses to run such an input (the oracle), so edgesim must not cost,
    calibrate and emit the model at it (ddddocr's YOLOX is fixed at 416: at 320 the compile
    ended in an onnxruntime error, `inspect` counted 1.88 G MACs for 3.18 G)."""
    m = _image_model([1, 3, 8, 8])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="dimensions"):
        sess.run(None, x_feed(1, 3, 4, 4))
    with pytest.raises(ModelError) as err:
        load(m, {"x": [1, 3, 4, 4]})
    assert str(err.value) == ("input x: dimension 2 is fixed at 8 by the model; the given "
                              "shape 1x3x4x4 has 4 there")


def test_int64_token_inputs_with_shapes():
    emb = RNG.standard_normal((10, 4)).astype(np.float32)
    m = model([helper.make_node("Gather", ["emb", "input_ids"], ["y"])],
              [("input_ids", TensorProto.INT64, ["batch", "seq"])],
              [("y", F, ["batch", "seq", 4])], [init("emb", emb)])
    feeds = {"input_ids": RNG.integers(0, 10, (1, 5)).astype(np.int64)}
    g = assert_same_as_ort(m, feeds, input_shapes={"input_ids": (1, 5)})
    assert g.types["input_ids"] == Spec((1, 5), "int64")


@pytest.mark.parametrize("shapes, message", [
    ({"z": (1, 3)}, "input z: no such graph input; the model's inputs are x"),
    ({"x": (1, 3)}, "input x: the model declares rank 4 but the given shape 1x3 has rank 2"),
    ({"x": (1, 3, -1, 4)}, "input x: shape [1, 3, -1, 4] has a negative dimension"),
])
def test_bad_input_shapes_are_rejected(shapes, message):
    with pytest.raises(ModelError) as err:
        load(_image_model(["N", 3, "H", "W"]), shapes)
    assert str(err.value) == message


# --- unsupported ops ----------------------------------------------------------------------------


def test_all_unsupported_ops_are_listed_in_one_error():
    f, i64 = F, TensorProto.INT64
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["v0", "i0"], name="topk_0"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms_1"),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("TopK", ["r", "k"], ["v3", "i3"], name="topk_3"),
        helper.make_node("Foo", ["x"], ["q"], name="foo", domain="com.example"),
    ]
    m = model(nodes, [("x", f, [2, 5]), ("boxes", f, [1, 3, 4]), ("scores", f, [1, 1, 3])],
              [("v0", f, [2, 2]), ("v3", f, [2, 2]), ("sel", i64, [3, 3]), ("q", f, [2, 5])],
              [init("k", np.array([2], np.int64))])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ModelError) as err:
        load(m)
    assert err.value.what == ("unsupported ops: NonMaxSuppression (node nms_1), "
                              "TopK (nodes topk_0, topk_3), com.example::Foo (node foo)")


# --- sparse initializers, local functions -------------------------------------------------------


def test_sparse_initializer_becomes_dense():
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([2.0, -1.0], np.float32), "w"),
        numpy_helper.from_array(np.array([[0, 1], [1, 2]], np.int64)), [2, 3])
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", F, [2, 3])],
              [("y", F, [2, 3])])
    m.graph.sparse_initializer.append(sparse)
    g = load(m)
    want = np.array([[0, 2, 0], [0, 0, -1]], np.float32)  # coordinates (0, 1) and (1, 2)
    np.testing.assert_array_equal(g.weights["w"], want)
    feeds = x_feed(2, 3)
    np.testing.assert_allclose(run(g, feeds)["y"], feeds["x"] + want, rtol=1e-6)


def test_local_functions_are_inlined():
    body = [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Neg", ["r"], ["b"])]
    fn = helper.make_function("com.local", "NegRelu", ["a"], ["b"], body,
                              [helper.make_opsetid("", 17)])
    m = model([helper.make_node("NegRelu", ["x"], ["y"], domain="com.local")],
              [("x", F, [2, 3])], [("y", F, [2, 3])])
    m.opset_import.append(helper.make_opsetid("com.local", 1))
    m.functions.append(fn)
    g = assert_same_as_ort(m, x_feed(2, 3))
    assert [layer.attrs["fn"] for layer in g.layers] == ["relu", "neg"]
