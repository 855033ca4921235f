"""The block size as a per-layer choice of the allocator (`--blocks`): its optimum over
(bits x block) equals brute force with sizes from the MatMulNBits layout in closed form; the
mixed-block model it plans runs in onnxruntime as the fake-quant simulation computes, with
the emitted bytes predicted exactly, and reads back with its blocks."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compiler.emit import emit
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from compiler.quantizers import fake_quant_weight
from edgesim import api, zoo
from edgesim.allocation import allocate
from edgesim.budget import Budget
from edgesim.tables import plan_file_bytes
from tests.compiler.emit_cases import assert_matches_sim

RNG = np.random.default_rng(16)
DIMS = (64, 96, 128, 48)  # K = 64, 96 (b64 / b128 pad to 128) and 128
BITS = (2, 4)
BLOCKS = (32, 64, 128)


def _chain() -> onnx.ModelProto:
    """x [8, 64] -> MatMul -> Relu -> MatMul -> Relu -> MatMul: three linear layers whose
    columns differ in scale (so their errors differ), no bias."""
    nodes, inits, x = [], [], "x"
    for i in range(3):
        w = RNG.standard_normal((DIMS[i], DIMS[i + 1])) * np.linspace(0.2, 3.0, DIMS[i + 1])
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        x = f"m{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", 1, [8, 64])],
                              [helper.make_tensor_value_info(x, 1, [8, 48])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _nbits_bytes(n: int, k: int, bits: int, block: int) -> int:
    """MatMulNBits' B [N, ceil(K/block), block*bits/8] uint8 plus fp32 scales [N, k_blocks],
    symmetric (no zero points; DESIGN.md)."""
    container = 2 if bits == 2 else 4
    return n * -(-k // block) * (block * container // 8 + 4)


def _options(w: np.ndarray) -> list[tuple[float, int, tuple[int, int]]]:
    """(omega, bytes, (bits, block)) of one layer (weight [out, in]): float32, then every
    (bits, block) with the proxy's omega ||Q(W) - W||^2 on that block's grid."""
    n, k = w.shape
    out = [(0.0, 4 * n * k, (32, 0))]
    for bits, block in itertools.product(BITS, BLOCKS):
        d = fake_quant_weight(w, bits, "per_block", 0, block).astype(np.float64) - w
        out.append((float(np.vdot(d, d)), _nbits_bytes(n, k, bits, block), (bits, block)))
    return out


FILE_SLACK = 400  # bytes: how far the allocator's graph estimate may sit from a plan's file


def test_allocator_optimum_over_bits_and_blocks_equals_brute_force() -> None:
    """Size budgets hold for the written file (graph and all), so the oracle is each plan's
    emitted file: nothing that fits beats the allocator's plan, and it is at least as good as
    every plan that fits with `FILE_SLACK` to spare (the graph estimate's tolerance)."""
    g = load(_chain())
    lin = [i for i, layer in enumerate(g.layers) if layer.kind == "linear"]
    weights = [np.asarray(g.weights[g.layers[i].inputs[1]]) for i in lin]

    def file_of(plan: tuple[tuple[int, int], ...]) -> int:
        bits = np.full((len(g.layers), 2), 32)
        bits[lin, 0] = [b for b, _ in plan]
        blocks = {g.layers[i].name: k for i, (_, k) in zip(lin, plan) if k}
        return plan_file_bytes(g, bits, None, blocks)

    combos = []
    for c in itertools.product(*map(_options, weights)):
        plan = tuple(o[2] for o in c)
        combos.append((sum(o[0] for o in c), file_of(plan), plan))
    low = min(c[1] for c in combos)
    high = file_of(((4, 32),) * len(lin))  # uniform q4 b32
    target = api.resolve_target("rpi5")
    mixed = 0
    for budget in np.linspace(low + FILE_SLACK, high, 7):
        r = allocate(g, target, method="proxy", weight_bits=BITS, blocks=BLOCKS,
                     budget=Budget("size", float(budget)))
        chosen = tuple((int(r.bits[i, 0]), int(r.blocks[i])) for i in lin)
        by_plan = {plan: size for _, size, plan in combos}
        assert r.total == by_plan[chosen] <= budget  # the plan's own file fits
        fits = min(s for s, size, _ in combos if size <= budget)
        spare = min(s for s, size, _ in combos if size <= budget - FILE_SLACK)
        assert fits - 1e-12 <= r.sensitivity <= spare * (1 + 1e-9) + 1e-12
        mixed += len({b for _, b in chosen if b}) > 1
    assert mixed  # some budget's optimum mixes blocks


def test_without_blocks_every_per_block_layer_stays_at_32() -> None:
    g = load(_chain())
    r = allocate(g, api.resolve_target("rpi5"), method="proxy", weight_bits=(4,),
                 budget=Budget("bits", 4))
    assert r.blocks is None
    assert r.total == 4 * sum(np.asarray(w).size for w in g.weights.values())


@pytest.mark.ort
def test_mixed_block_plan_runs_in_onnxruntime_as_simulated() -> None:
    d = zoo.load_digits_data()
    m = zoo.build("digits_transformer")
    g = load(m, {"input": (64, 1, 8, 8)})
    target = api.resolve_target("rpi5")
    kw = dict(method="proxy", weight_bits=(4,), blocks=BLOCKS, metric="size")
    small = allocate(g, target, pick=0, **kw)
    b32 = allocate(g, target, method="proxy", weight_bits=(4,), metric="size", pick=0)
    r = allocate(g, target, budget=Budget("size", (small.total + b32.total) / 2), **kw)
    assert len(set(r.blocks[r.blocks > 0].tolist())) > 1  # a mixed-block plan
    layer_blocks = {layer.name: int(b) for layer, b in zip(g.layers, r.blocks) if b}
    calib = calibrate(load(m, {"input": (200, 1, 8, 8)}), [{"input": d["x_calib"]}])
    q = quantize(g, r.bits, calib, QuantOptions(layer_blocks=layer_blocks))
    model = emit(q)
    written = {n.name: {a.name: a.i for a in n.attribute} for n in model.graph.node
               if n.op_type == "MatMulNBits"}
    assert {k: v["block_size"] for k, v in written.items()} == layer_blocks
    assert_matches_sim(model, q, {"input": d["x_test"][:64]}, "transformer")
    for name in layer_blocks:  # predicted bytes == the emitted initializers
        i = [la.name for la in g.layers].index(name)
        inits = [t for t in model.graph.initializer if t.name.startswith(f"{name}.")]
        assert float(r.cost.weight_bytes[i, 0]) == sum(len(t.raw_data) for t in inits), name
    back = load(model, {"input": (64, 1, 8, 8)})  # read back as a quantized model
    assert {la.name: la.quant.block for la in back.layers if la.quant.block} == layer_blocks


def test_cli_refuses_a_block_onnxruntime_has_no_kernel_for(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "edgesim", "compile", "zoo:digits_transformer",
                          "--calib-random", "4", "--method", "proxy", "--blocks", "32,48",
                          "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "--blocks" in out.stderr and "48" in out.stderr


@pytest.mark.ort
def test_compile_reports_each_layers_block_and_reemits_it(tmp_path) -> None:
    target = api.resolve_target("rpi5")
    g = load(zoo.build("digits_transformer"))
    small = allocate(g, target, method="proxy", weight_bits=(4,), blocks=BLOCKS, metric="size",
                     pick=0)
    b32 = allocate(g, target, method="proxy", weight_bits=(4,), metric="size", pick=0)
    kw = dict(target="rpi5", calib_random=8, method="proxy", weight_bits=(4,), quiet=True)
    r = api.compile("zoo:digits_transformer", outdir=tmp_path / "a", blocks=BLOCKS,
                    budget=f"size={(small.total + b32.total) / 2}B", **kw)
    blocks = {x.name: x.block for x in r.layers if x.block}
    assert len(set(blocks.values())) > 1
    assert r.result.weight_bytes <= (small.total + b32.total) / 2
    md = (tmp_path / "a" / "report.md").read_text()
    assert all(f"matmulnbits b{b}" in md for b in set(blocks.values()))
    again = api.compile("zoo:digits_transformer", outdir=tmp_path / "b",
                        assignment=str(tmp_path / "a" / "report.json"), **kw)
    assert {x.name: x.block for x in again.layers if x.block} == blocks
    assert again.result.weight_bytes == r.result.weight_bytes  # (metadata differs: budget)


def test_activation_term_is_the_same_at_every_block_of_a_pair() -> None:
    """With `--act-bits` measured (`choice_errors`, one column per (w, a) pair), each block of
    a pair gets that pair's activation term, computed at its first block (closed form of
    `with_act_term`: rate * (e[w, a] - e[w, float]))."""
    from compiler.sensitivity.act_term import with_act_term
    from edgesim.alloc_problem import _with_act

    choices = np.array([(32, 32, 32), (4, 32, 32), (4, 32, 64), (4, 8, 32), (4, 8, 64)])
    omega = np.array([[0.0, 2.0, 3.0, 2.0, 3.0], [0.0, 1.0, 1.5, 1.0, 1.5]])
    err = np.array([[0.0, 4.0, 6.0], [0.0, 2.0, 5.0]])  # pairs (32, 32), (4, 32), (4, 8)
    got = _with_act(omega, err, choices)
    rate = omega[:, 1] / err[:, 1]  # the weight-only column with the most error
    term = rate * (err[:, 2] - err[:, 1])
    np.testing.assert_allclose(got[:, 3], omega[:, 1] + term)
    np.testing.assert_allclose(got[:, 4], omega[:, 2] + term)
    np.testing.assert_allclose(got[:, :3], omega[:, :3])
    pairs = choices[[0, 1, 3], :2]
    np.testing.assert_allclose(with_act_term(omega[:, [0, 1, 3]], err, pairs)[:, 2], got[:, 3])
