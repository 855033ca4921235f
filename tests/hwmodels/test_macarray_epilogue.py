"""Fused epilogues (`fused_epilogue`): which layers are a GEMM's epilogue (`Graph.epilogues`,
checked on hand-built ONNX graphs), their closed-form cost on the accumulator drain, SCALE-Sim
mode unchanged, and the sweep's batched kernel still equal to the full kernel."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from compiler.ir import CATEGORY_GEMM
from hwmodels import configs
from hwmodels.macarray import evaluate
from hwmodels.target import load_target
from tests.hwmodels.test_macarray import INT8, array, gemm, layer_table, stream
from tests.hwmodels.test_prepared_batch import (
    batch_equals_full,
    full_costs,
    random_designs,
    random_table,
)


def _const(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _residual_model() -> onnx.ModelProto:
    """x -> Conv(bias) -> Relu -> r; r -> Conv -> Mul(scale) -> Add(r) -> Relu -> y.
    By construction: the first Relu and the Mul are epilogues of their convs; the residual
    Add (two activations) and the Relu after it (its producer is no GEMM) are not."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c2", "s"], ["m2"], name="scale2"),
        helper.make_node("Add", ["m2", "r"], ["a"], name="residual"),
        helper.make_node("Relu", ["a"], ["y"], name="relu_out"),
    ]
    inits = [_const("w1", (4, 2, 3, 3), 0), _const("b1", (4,), 1),
             _const("w2", (4, 4, 3, 3), 2), _const("s", (1, 4, 1, 1), 3)]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _kind_of(g, name: str) -> str:
    return g.layer(name).kind


def test_epilogues_are_single_use_bias_scale_and_relu_after_a_gemm() -> None:
    g = load(_residual_model())
    epi = g.epilogues()
    gemms = [x.name for x in g.layers if x.kind == "conv"]
    assert len(gemms) == 2
    # exactly the Relu after conv1 and the Mul after conv2 (whatever the frontend names them)
    assert sorted((_kind_of(g, e), owner) for e, owner in epi.items()) == sorted(
        [("activation", gemms[0]), ("eltwise", gemms[1])])
    residual = [x.name for x in g.layers if x.kind == "eltwise"
                and x.attrs.get("fn") == "add"]
    assert residual and not set(residual) & set(epi)  # a residual Add does not fuse
    table = g.layer_table()
    assert table.epilogue_of is not None
    for i, name in enumerate(table.names):
        want = table.names.index(epi[name]) if name in epi else -1
        assert table.epilogue_of[i] == want
        if want >= 0:
            assert table.category[want] == CATEGORY_GEMM


def test_an_output_read_twice_does_not_fuse() -> None:
    """conv1's output feeding both a Relu and the graph output must be written unfused."""
    model = _residual_model()
    model.graph.output.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT,
                                                            [1, 4, 6, 6]))
    g = load(model)
    assert all(_kind_of(g, e) != "activation" for e in g.epilogues())


def _conv_relu(a_out: int = 1000, bias_elems: int = 0):
    """A GEMM producing `a_out` results, then a bias add of `bias_elems` constants (if any)
    and a ReLU, as the table rows the IR would give; epilogue_of marks both."""
    rows = [gemm(m=a_out // 10, n=10, k=27)]
    if bias_elems:
        rows.append(stream(a_out, a_out, a_out, w_elems=bias_elems))
    rows.append(stream(a_out, a_out, a_out, kind="activation"))
    table = layer_table(rows)
    of = np.array([-1] + [0] * (len(rows) - 1), dtype=np.int64)
    return dataclasses.replace(table, epilogue_of=of)


def test_fused_relu_costs_no_vector_cycles_when_lanes_keep_up() -> None:
    table = _conv_relu()
    off = evaluate(table, INT8, array(cols=16, vector_lanes=16))
    on = evaluate(table, INT8, array(cols=16, vector_lanes=16, fused_epilogue=True))
    assert off.cycles[1, 0] == math.ceil(1000 / 16)  # one op per lane per cycle
    assert on.cycles[1, 0] == 0.0
    assert on.energy_pj_dram[1, 0] == 0.0 and on.energy_pj_onchip[1, 0] == 0.0
    assert on.energy_pj_compute[1, 0] == off.energy_pj_compute[1, 0]  # the ops still happen
    assert on.cycles[0, 0] == off.cycles[0, 0]  # the GEMM itself is unchanged


def test_fewer_lanes_than_columns_throttle_the_drain() -> None:
    on = evaluate(_conv_relu(), INT8, array(cols=32, vector_lanes=8, fused_epilogue=True))
    assert on.cycles[1, 0] == math.ceil(1000 / 8) - math.ceil(1000 / 32)


def test_bias_parameters_travel_with_the_gemm() -> None:
    """The bias bytes move from the add's DRAM traffic to its GEMM's: total bytes equal."""
    table = _conv_relu(bias_elems=10)
    slow = dict(dram_bandwidth_gbps=1.0, activations_on_chip=True)
    off = evaluate(table, INT8, array(**slow))
    on = evaluate(table, INT8, array(fused_epilogue=True, **slow))
    pj = float(configs.from_targets([array(**slow)]).cfg_f[0, 2])
    assert on.energy_pj_dram[1, 0] == 0.0
    assert math.isclose(on.energy_pj_dram[0, 0] - off.energy_pj_dram[0, 0], 4 * 10 * pj)
    assert math.isclose(on.energy_pj_dram[:, 0].sum(), off.energy_pj_dram[:, 0].sum())


def test_residual_add_and_scalesim_mode_are_unchanged() -> None:
    rows = [gemm(100, 10, 27), stream(1000, 2000, 1000)]  # Add of two activations
    table = dataclasses.replace(layer_table(rows), epilogue_of=np.array([-1, -1]))
    fused = evaluate(table, INT8, array(fused_epilogue=True))
    plain = evaluate(table, INT8, array())
    np.testing.assert_array_equal(fused.cycles, plain.cycles)
    # flag off (SCALE-Sim mode): marking epilogues changes nothing
    marked = evaluate(_conv_relu(bias_elems=10), INT8, array())
    bare = evaluate(dataclasses.replace(_conv_relu(bias_elems=10), epilogue_of=None), INT8,
                    array())
    for f in dataclasses.fields(marked):
        np.testing.assert_array_equal(getattr(marked, f.name), getattr(bare, f.name))


def test_shipped_targets_other_than_the_sparse_array_keep_it_off() -> None:
    assert load_target("sparse-mac-32x32").fused_epilogue
    assert not load_target("systolic-16x16").fused_epilogue


def test_batched_kernel_equals_full_kernel_with_epilogues() -> None:
    rng = np.random.default_rng(15)
    table = random_table(rng, 60)
    gemm_rows = np.flatnonzero(table.category == CATEGORY_GEMM)
    pick = (table.category != CATEGORY_GEMM) & (rng.random(len(table)) < 0.5)
    of = np.where(pick, rng.choice(gemm_rows, size=len(table)), -1)
    table = dataclasses.replace(table, epilogue_of=of.astype(np.int64))
    designs = [dataclasses.replace(d, fused_epilogue=bool(i % 3))
               for i, d in enumerate(random_designs(rng, 30))]
    full = batch_equals_full(table, designs, rng)
    # the epilogues did change something on the fused designs (the test is not vacuous)
    off = full_costs(dataclasses.replace(table, epilogue_of=None), designs)
    assert not np.array_equal(full, off)


def _conv_pool_model(pool: str, also_output: bool = False) -> onnx.ModelProto:
    """x -> Conv -> Relu -> `pool` -> y (MaxPool 2x2 or GlobalAveragePool)."""
    kw = dict(kernel_shape=[2, 2], strides=[2, 2]) if pool == "MaxPool" else {}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node(pool, ["r"], ["y"], name="pool", **kw)]
    side = 3 if pool == "MaxPool" else 1
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, side, side])]
    if also_output:
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4, 6, 6]))
    graph = helper.make_graph(
        nodes, "conv_pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        outs, [_const("w", (4, 2, 3, 3), 4)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_pool_after_a_gemm_is_an_epilogue_unless_its_input_is_read_twice() -> None:
    # TPU v1's activation unit pools the accumulators' outputs; Gemmini max-pools on move-out
    for pool in ("MaxPool", "GlobalAveragePool"):
        g = load(_conv_pool_model(pool))
        conv = next(x.name for x in g.layers if x.kind == "conv")
        pools = [x.name for x in g.layers if x.kind == "pool"]
        assert len(pools) == 1 and g.epilogues().get(pools[0]) == conv
        g2 = load(_conv_pool_model(pool, also_output=True))
        assert not any(_kind_of(g2, e) == "pool" for e in g2.epilogues())


def test_a_fused_pool_throttles_the_drain_by_its_ops_beyond_the_results_drained() -> None:
    # a GEMM draining 1024 results (ceil(1024 / 32) = 32 cycles on 32 columns), then a pool
    # reading them: 2x2 (256 outputs, 4 ops each) or 3x3 stride 2 (256 outputs, 9 ops each)
    for ops, lanes, hand in ((1024, 32, 0), (1024, 8, 1024 // 8 - 32), (2304, 32, 72 - 32)):
        rows = [gemm(m=64, n=16, k=27), stream(ops, 1024, 256, kind="pool")]
        table = dataclasses.replace(layer_table(rows), epilogue_of=np.array([-1, 0]))
        on = evaluate(table, INT8, array(cols=32, vector_lanes=lanes, fused_epilogue=True))
        off = evaluate(table, INT8, array(cols=32, vector_lanes=lanes))
        assert on.cycles[1, 0] == hand
        assert off.cycles[1, 0] == math.ceil(ops / lanes)  # a separate vector-unit pass
