"""The copies onnxruntime inserts between layouts (hwmodels.ort_layout): which layer each
NCHWc reorder and NHWC Transpose serves, checked against the graph onnxruntime optimises
(mapped to layers as `edgesim validate` maps profiled nodes), and their cost terms
(hwmodels.kernels.cpu_inserted) in closed form."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from hwmodels import cpu, ort_layout
from hwmodels.kernels import cpu_inserted as I
from hwmodels.kernels import cpu_layout as K
from hwmodels.target import load_target

INSERTED_OPS = ("Transpose", "ReorderInput", "ReorderOutput")


def _avx2() -> cpu.CpuTarget:
    """An AVX2 + FMA host like this project's test machines (NCHWc block: 8 floats)."""
    return dataclasses.replace(load_target("rpi5"), arch="x86_64", simd_bits=256,
                               isa=("sse4_2", "avx", "avx2", "fma"), fma_pipes=2.0,
                               int_mul_pipes=2.0, dot_pipes=0.0, name="avx2-host")


def _ort_inserted(tmp_path, graph, bits) -> Counter:
    """Inserted nodes per IR layer in onnxruntime's optimised graph (the oracle), mapped to
    layers by `edgesim.validate.assign_nodes`."""
    import onnx
    import onnxruntime as ort

    from edgesim.node_map import assign_nodes
    from edgesim.quantize import quantize_model

    path = quantize_model(graph, bits, calib_random=2, out=tmp_path / "m.onnx").out
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    nodes = list(onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    where = assign_nodes([(n.name, list(n.input), list(n.output)) for n in nodes], graph)
    return Counter(graph.layers[where[n.name]].name for n in nodes
                   if n.op_type in INSERTED_OPS)


def _modelled(graph, bits) -> Counter:
    table = graph.layer_table()
    choice = cpu.layer_choices(table, np.array([bits]), _avx2(), K.RUNTIME_ORT)
    ins = ort_layout.inserted(table, choice[:, 0], _avx2())
    return Counter({table.names[i]: int(n) for i, n in enumerate(ins[:, I.I_NODES]) if n})


def _on_avx2_host() -> bool:
    import onnxruntime  # noqa: F401  (the oracle needs it; the CPU must have AVX2 for NCHWc)

    flags = open("/proc/cpuinfo").read()
    return " avx2 " in flags


@pytest.mark.ort
@pytest.mark.parametrize("builder,bits", [("resnet18", (8, 8)), ("resnet18", (32, 32)),
                                          ("mobilenet_v2", (8, 8)), ("mobilenet_v2", (32, 32))])
def test_inserted_nodes_land_on_the_layers_onnxruntime_runs_them_for(tmp_path, builder, bits):
    from edgesim.api import load_graph
    from edgesim.zoo import cnn

    assert _on_avx2_host()  # the oracle's NCHWc reorders exist on AVX2 x86 only
    g = load_graph(getattr(cnn, builder)(num_classes=10, resolution=32))
    oracle = _ort_inserted(tmp_path, g, 8 if bits == (8, 8) else "fp32")
    assert oracle == _modelled(g, list(bits))
    assert sum(oracle.values()) >= 1


def test_resnet_stem_w8a8_copies_by_kind():
    """ResNet's W8A8 stem: the RGB input is transposed to NHWC by the scalar loop (3 channels),
    conv1's uint8 output back to NCHW for the float MaxPool (its Add reader keeps it float),
    which reorders its input to NCHWc and its output back."""
    from edgesim.api import load_graph
    from edgesim.zoo import cnn

    g = load_graph(cnn.resnet18(num_classes=10, resolution=32))
    t = g.layer_table()
    choice = cpu.layer_choices(t, np.array([[8, 8]]), _avx2(), K.RUNTIME_ORT)[:, 0]
    ins = ort_layout.inserted(t, choice, _avx2())
    conv1, pool = t.names.index("conv1/Conv"), t.names.index("maxpool/MaxPool")
    assert ins[conv1, I.I_T_SCALAR] == 3 * 32 * 32           # input [1, 3, 32, 32]
    assert ins[conv1, I.I_T_U8_BLOCK] == 64 * 16 * 16        # conv1 output [1, 64, 16, 16]
    assert ins[pool, I.I_REORDER] == 64 * 16 * 16 + 64 * 8 * 8  # its input, then its output
    # no NCHWc on Arm: the same graph has only the NHWC Transposes there
    arm = ort_layout.inserted(t, choice, load_target("rpi5"))
    assert arm[:, I.I_REORDER].sum() == 0 and arm[conv1, I.I_T_SCALAR] == 3 * 32 * 32


def _cost(ins_row: np.ndarray, target: cpu.CpuTarget, threads: int) -> tuple[float, np.ndarray,
                                                                            np.ndarray]:
    p, ch = cpu.params_row(target, threads), cpu.cache_rows(target)
    out = np.zeros((K.NO, 1, 1, 1))
    I.add_inserted(ins_row[None, None, None, :], p[None], ch[None], out)
    return float(out[K.O_CYCLES, 0, 0, 0]), p, ch


def test_scalar_transpose_books_a_cycle_per_element_split_over_threads():
    row = np.zeros(I.NI)
    row[I.I_T_SCALAR], row[I.I_NODES] = 150528.0, 1.0  # a uint8 [1, 3, 224, 224] input
    cyc1, p, ch = _cost(row, _avx2(), 1)
    cyc2, _, _ = _cost(row, _avx2(), 2)
    last = int(p[K.P_NLEVELS]) - 1  # 301 KB read + written fits the last level
    mem = 2 * 150528 / ch[last, K.C_BPC]
    assert cyc1 == pytest.approx(max(150528 * 1.0, mem) + p[K.P_OP_OVH])
    # onnxruntime 1.32 splits the rows over the session's threads; the second thread adds
    # parallel_efficiency of a core, the shared last level's bandwidth does not grow
    eff = _avx2().parallel_efficiency
    assert cyc2 == pytest.approx(max(150528 * 1.0 / (1 + eff), mem) + p[K.P_OP_OVH])


def test_block_transpose_rate_is_the_sse2_8x8_block():
    # 8 loads + 24 unpacks + 8 stores per 64 bytes at 3 vector uops per cycle
    assert I.T_BLOCK_CYC == pytest.approx(40 / 64 / 3)
    row = np.zeros(I.NI)
    row[I.I_T_U8_BLOCK], row[I.I_NODES] = 64 * 56 * 56, 1.0
    cyc, p, ch = _cost(row, _avx2(), 1)
    mem = 2 * 64 * 56 * 56 / ch[int(p[K.P_NLEVELS]) - 1, K.C_BPC]
    assert cyc == pytest.approx(max(64 * 56 * 56 * 40 / 64 / 3, mem) + p[K.P_OP_OVH])


def test_reorder_is_a_memory_bound_fp32_copy():
    row = np.zeros(I.NI)
    row[I.I_REORDER], row[I.I_NODES] = 64 * 112 * 112, 1.0  # 3.2 MB in, 3.2 MB out
    cyc, p, ch = _cost(row, _avx2(), 1)
    nl = int(p[K.P_NLEVELS])
    nbytes = 8 * 64 * 112 * 112
    fits = nbytes <= ch[nl - 1, K.C_BYTES]
    bw = ch[nl - 1, K.C_BPC] if fits else p[K.P_DRAM_BPC]
    assert cyc == pytest.approx(nbytes / bw + p[K.P_OP_OVH])


def test_inserted_copies_reach_the_cost_of_their_layer_only():
    from edgesim.api import load_graph
    from edgesim.zoo import cnn

    t = load_graph(cnn.resnet18(num_classes=10, resolution=32)).layer_table()
    x = cpu.kernel_inputs(t, np.array([[8, 8], [32, 32]]), [_avx2()], threads=1)
    with_copies = cpu.run_kernel(x)
    without = cpu.run_kernel(dataclasses.replace(x, inserted=None))
    added = (with_copies - without)[K.O_CYCLES, 0]
    has = x.inserted[0, :, :, I.I_NODES] > 0
    assert np.all(added[~has] == 0) and np.all(added[has] > 0)
    assert added[:, 0].sum() > added[:, 1].sum()  # W8A8 inserts more than fp32


@pytest.mark.parametrize("readers,int8", [(1, True), (2, False)])
def test_a_pool_between_qlinear_convs_runs_uint8_only_with_one_reader(readers, int8):
    """DQ -> MaxPool -> Q is dropped (uint8 MaxPool, NHWC) when one QLinearConv reads the
    pool; with two (ResNet50's stem MaxPool feeding conv1 and the downsample conv, checked
    against onnxruntime's optimised ResNet50 W8A8 graph) it stays a float NCHW pool between
    two Transposes."""
    from tests.hwmodels.test_cpu import conv, layer, make_table

    rows = [conv(8, 8, 8, 1), layer("pool", a_in=512, a_out=128, ops=512)]
    rows += [conv(8, 8, 4, 1)] * readers
    reads = [[-1, -1], [0, -1]] + [[1, -1]] * readers
    t = dataclasses.replace(make_table(rows), reads=np.array(reads, dtype=np.int64),
                            epilogue_of=np.full(len(rows), -1, dtype=np.int64))
    paths = np.array([K.PATH_QLINEAR, K.PATH_NONE] + [K.PATH_QLINEAR] * readers)
    lay = ort_layout.layouts(t, paths, block=0)
    assert (lay[1] == ort_layout.NHWC) == int8
    # the graph input is transposed into NHWC for conv0; a float pool adds conv0's uint8
    # output transposed out of NHWC and the pool's output back in, once for both readers
    ins = ort_layout.inserted(t, paths, load_target("rpi5"))
    assert ins[:, I.I_NODES].sum() == 1 + (0 if int8 else 2)
    # conv0 (8 channels, 8 x 8): its input in, and for the float pool its output out
    assert ins[0, I.I_T_U8_BLOCK] == 512 + (0 if int8 else 512)
