"""The copies onnxruntime inserts between layers of different memory layouts, per layer and
bit choice: NCHWc reorders and NHWC transposes (the nodes its optimised graph runs that no IR
layer has).

Layouts (onnxruntime 1.3x CPU provider, core/optimizer):

- NHWC: `NhwcTransformer` (nhwc_transformer.cc) rewrites every QLinearConv (and the
  QLinear pools / Adds between them) to channels-last and wraps it in Transposes; the
  transpose optimiser then cancels the pairs between NHWC ops and pushes the rest through
  layout-agnostic ops (elementwise, Q / DQ), so a Transpose survives only where an NHWC tensor
  meets an NCHW one: the graph input, a float op that needs NCHW, an op whose inputs disagree.
- NCHWc (x86 with AVX2 / AVX-512 only: MLAS's NCHWc kernels, snchwc.cpp): `NchwcTransformer`
  (nchwc_transformer.cc) runs float Convs, and MaxPool / AveragePool with channels a multiple
  of the block (8 floats on AVX2, 16 on AVX-512; global pools only on an NCHWc input), in
  blocked layout; `ReorderInput` converts an NCHW input (a conv whose input channels are not
  a multiple of the block reads NCHW directly: the RGB stem), `ReorderOutput` converts back
  before the first reader that is not NCHWc. Elementwise ops between NCHWc producers stay NCHWc.

Each inserted copy is charged to the layer whose group `edgesim validate` maps its node to:
a ReorderInput and an entry Transpose to the layer reading it, a ReorderOutput and an exit
Transpose to the layer writing it. Checked against onnxruntime's optimised graph in
tests/hwmodels/test_ort_layout.py.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import KIND_CODE, LayerTable
from hwmodels import ort_int8
from hwmodels.cpu_choice import producers
from hwmodels.cpu_schema import CpuTarget
from hwmodels.kernels import cpu_inserted as I
from hwmodels.kernels import cpu_layout as K

NCHW, NCHWC, NHWC = 0, 1, 2
QLINEAR_PATHS = (K.PATH_QLINEAR, K.PATH_QLINEAR_IN, K.PATH_QLINEAR_OUT, K.PATH_QLINEAR_CHAIN)
_CONV, _POOL, _RESHAPE = KIND_CODE["conv"], KIND_CODE["pool"], KIND_CODE["reshape"]
_ACTIVATION = KIND_CODE["activation"]
AGNOSTIC_KINDS = (KIND_CODE["eltwise"], KIND_CODE["activation"])


def nchwc_block(target: CpuTarget) -> int:
    """Floats per NCHWc block (MlasNchwcGetBlockSize: 16 with AVX-512F, 8 with AVX2); 0 where
    onnxruntime has no NCHWc kernels (Arm, x86 without AVX2)."""
    if target.arch != "x86_64":
        return 0
    return 16 if "avx512f" in target.isa else 8 if "avx2" in target.isa else 0


def _producers(table: LayerTable, paths: np.ndarray, src: np.ndarray, i: int) -> list[int]:
    """Rows whose results layer i reads (for an activation fused into its GEMM's output loop,
    that GEMM: its producer in `src`, `cpu_choice.producers`); -1 for a graph input."""
    reads = table.reads[i] if table.reads is not None else np.array([-1])
    out = [-1 if p < 0 else int(src[p]) if paths[p] == K.PATH_FUSED else int(p) for p in reads]
    return out[:1] if out[1:] == [-1] else out


def _all_producers(table: LayerTable, paths: np.ndarray) -> list[list[int]]:
    """`_producers` of every layer for one bit choice's paths (read many times per layer)."""
    src = producers(table)
    return [_producers(table, paths, src, i) for i in range(len(table))]


def _in_channels(table: LayerTable, prods: list[list[int]], i: int) -> int:
    """Input channels of a conv (weight [cout, cin / g, kh, kw], square kernels) or the
    channels of the first producer of another layer."""
    if table.kind_code[i] == _CONV:
        kh = int(table.kernel_rows[i]) if table.kernel_rows is not None else 1
        return int(table.k[i]) // max(1, kh * kh) * int(table.groups[i])
    src = prods[i][0]
    return int(table.channels[src]) if src >= 0 and table.channels is not None else 0


def _own_layout(table: LayerTable, i: int, path: int, int8: bool, block: int,
                inputs: list[int]) -> int:
    """Layout layer i runs in, from its kernel path and its producers' layouts."""
    kind = table.kind_code[i]
    if kind == _CONV:
        return NHWC if path in QLINEAR_PATHS else NCHWC if block else NCHW
    if kind == _POOL and not int8:
        chans = int(table.channels[i]) if table.channels is not None else 0
        global_pool = int(table.a_out_elems[i]) == chans
        if not block or chans % block or (global_pool and set(inputs) != {NCHWC}):
            return NCHW
        return NCHWC
    if kind in AGNOSTIC_KINDS or (kind == _POOL and int8):
        return inputs[0] if len(set(inputs)) == 1 else NCHW
    return NCHW


def _direct_readers(table: LayerTable, paths: np.ndarray,
                    prods: list[list[int]]) -> list[list[int]]:
    """The layers reading each row's result, looking through reshapes (QDQPropagation moves a
    Q node across them); a fused activation's readers count for its GEMM."""
    direct: list[list[int]] = [[] for _ in range(len(table))]
    for j in range(len(table)):
        if paths[j] != K.PATH_FUSED:
            for p in set(prods[j]) - {-1}:
                direct[p].append(j)
    out: list[list[int]] = [[] for _ in range(len(table))]
    for i in reversed(range(len(table))):
        for j in direct[i]:
            out[i].extend(out[j] if table.kind_code[j] == _RESHAPE else [j])
    return out


def _int8_pools(table: LayerTable, paths: np.ndarray, prods: list[list[int]],
                readers: list[list[int]]) -> np.ndarray:
    """bool [L]: pool / Add layers onnxruntime runs on uint8 (`ort_int8.int8_passthrough`'s
    rule on direct edges: a pool that is a GEMM's epilogue for MAC arrays is its own node
    here): every producer a QLinearConv and every reader one that quantises its input; a pool
    with more than one reader keeps its float DQ -> MaxPool -> Q (ResNet50's stem MaxPool
    feeding two QLinearConvs stays float in onnxruntime's optimised graph)."""
    q = np.isin(paths, QLINEAR_PATHS)
    reads_q = q | (paths == K.PATH_MATMUL_INT_FLOAT)
    out = np.zeros(len(table), bool)
    for j in np.flatnonzero(np.isin(table.kind_code, ort_int8.PASSTHROUGH_KINDS)):
        srcs = prods[j]
        single = table.kind_code[j] != _POOL or len(readers[j]) == 1
        out[j] = (-1 not in srcs and all(q[s] for s in srcs) and bool(readers[j]) and single
                  and all(reads_q[r] for r in readers[j]))
    return out


def layouts(table: LayerTable, paths: np.ndarray, block: int) -> np.ndarray:
    """int [L]: the layout (NCHW / NCHWC / NHWC) each layer runs in for one bit choice's
    kernel paths (`hwmodels.cpu.layer_choices` column)."""
    prods = _all_producers(table, paths)
    return _layouts(table, paths, block, prods, _direct_readers(table, paths, prods))


def _layouts(table: LayerTable, paths: np.ndarray, block: int, prods: list[list[int]],
             readers: list[list[int]]) -> np.ndarray:
    int8 = _int8_pools(table, paths, prods, readers)
    out, src = np.full(len(table), NCHW), producers(table)
    for i in range(len(table)):
        if paths[i] == K.PATH_FUSED:  # runs inside its GEMM's output loop
            out[i] = out[src[i]]
            continue
        inputs = [int(out[s]) if s >= 0 else NCHW for s in prods[i]]
        out[i] = _own_layout(table, i, int(paths[i]), bool(int8[i]), block, inputs)
    return out


def inserted(table: LayerTable, paths: np.ndarray, target: CpuTarget) -> np.ndarray:
    """float64 [L, NI] (`kernels.cpu_inserted` columns): the reorders and transposes charged
    to each layer for one bit choice's kernel paths."""
    out = np.zeros((len(table), I.NI))
    if table.reads is None:
        return out
    block, prods = nchwc_block(target), _all_producers(table, paths)
    readers = _direct_readers(table, paths, prods)
    lay = (_layouts(table, paths, block, prods, readers), block, target.caches[0].line_bytes)
    done: tuple[set[int], set[int]] = (set(), set())
    for i in range(len(table)):
        if paths[i] != K.PATH_FUSED:
            for s in prods[i]:
                _edge(table, (paths, prods), lay, (i, s), done, out)
    if table.graph_output is not None:
        for w in np.flatnonzero(table.graph_output).tolist():
            _output(table, w, (paths, prods), lay, readers, done[0], out)
    return out


def _output(table: LayerTable, s: int, column: tuple[np.ndarray, list[list[int]]],
            layout: tuple[np.ndarray, int, int], readers: list[list[int]],
            reordered: set[int], out: np.ndarray) -> None:
    """The copy back to NCHW of a graph output that layer s writes in another layout (the
    model declares NCHW; onnxruntime's optimised graph ends a QLinearConv chain with a
    Transpose before the output's DQ node), unless a reader's edge already made it."""
    paths, _ = column
    lay, _, line = layout
    w = int(producers(table)[s]) if paths[s] == K.PATH_FUSED else s
    if int(lay[s]) == NCHW or any(int(lay[r]) == NCHW for r in readers[w]):
        return
    if int(lay[s]) == NCHWC:
        if w not in reordered:
            reordered.add(w)
            _copy(out, w, I.I_REORDER, float(table.a_out_elems[w]))
        return
    _exit(table, s, column, (False, line), out)


def _edge(table: LayerTable, column: tuple[np.ndarray, list[list[int]]],
          layout: tuple[np.ndarray, int, int], edge: tuple[int, int],
          done: tuple[set[int], set[int]], out: np.ndarray) -> None:
    """The copies on the edge producer s -> layer i (s = -1: a graph input); `column`: the
    bit choice's paths and producers; `layout`: the layers' layouts, the NCHWc block and the
    L1 line bytes; `done`: tensors already reordered / transposed."""
    (_, prods), (lay, block, line), (i, s), (reordered, transposed) = column, layout, edge, done
    src = int(lay[s]) if s >= 0 else NCHW
    own = int(lay[i])
    if src == own:
        return
    if src == NCHWC and s not in reordered:  # one ReorderOutput per tensor, on its writer
        reordered.add(s)
        _copy(out, s, I.I_REORDER, float(table.a_out_elems[s]))
    share = float(table.a_in_elems[i]) / len(prods[i])
    if own == NCHWC and (table.kind_code[i] != _CONV or _in_channels(table, prods, i) % block == 0):
        _copy(out, i, I.I_REORDER, share)
    if own == NHWC and s not in transposed:  # entry Transpose of the Q node's uint8 output
        transposed.add(s)
        moved = _in_channels(table, prods, i)
        _copy(out, i, I.I_T_U8_BLOCK if moved >= 8 else I.I_T_SCALAR, share)
        if moved >= 8:  # MlasTranspose(M = C, N = H * W): strips down the C input rows
            _strided(out, i, I.I_U8_EXTRA, strided_side(moved, share / moved, 8, line))
    if src == NHWC:
        _exit(table, s, column, (len(prods[i]) > 1, line), out)


def _exit(table: LayerTable, s: int, column: tuple[np.ndarray, list[list[int]]],
          how: tuple[bool, int], out: np.ndarray) -> None:
    """A Transpose out of NHWC, charged to the writer s (it writes s's IR tensor, or feeds
    s's DQ node): on the uint8 tensor before the DQ node when a single-input op reads it, on
    the float tensor when an op whose inputs disagree does (`how`: that, and the L1 line
    bytes). The transpose optimiser pushes it up through single-input activations to the op
    writing their input."""
    (paths, prods), (mixed, line) = column, how
    while table.kind_code[s] == _ACTIVATION and len(prods[s]) == 1:
        up = prods[s][0]
        if up < 0:
            break
        s = up
    u8 = int(paths[s]) in QLINEAR_PATHS and not mixed
    elems = float(table.a_out_elems[s])
    _copy(out, s, I.I_T_U8_BLOCK if u8 else I.I_T_SCALAR_F32, elems)
    chans = int(table.channels[s]) if table.channels is not None else 0
    if chans > 0:  # the strided side: u8 reads H * W input rows of C bytes (MlasTranspose
        # M = H * W, N = C); the 4-byte loop writes C output rows of H * W elements
        side = (strided_side(elems / chans, chans, 8, line) if u8
                else strided_side(chans, elems / chans * 4.0, 4, line))
        _strided(out, s, I.I_U8_EXTRA if u8 else I.I_F32_EXTRA, side)


def strided_side(rows: float, row_bytes: float, chunk: int, line: int) -> tuple[float, float]:
    """(bytes fetched again, bytes of lines a sweep touches) of a transpose's strided side:
    `rows` rows of `row_bytes` visited `chunk` bytes at a time, one row after another
    (`kernels.cpu_inserted.strided_pass`). A row's line is visited min(line, row_bytes) /
    chunk times; all but the first visit fetch it again unless the sweep's lines stay cached."""
    span = min(float(line), row_bytes)
    return rows * row_bytes * max(0.0, span / chunk - 1.0), rows * span


def _strided(out: np.ndarray, row: int, col: int, side: tuple[float, float]) -> None:
    """Add a transpose's strided side at `col` (extra bytes) and `col + 1` (sweep bytes: the
    largest of the layer's transposes of that kind)."""
    out[row, col] += side[0]
    out[row, col + 1] = max(out[row, col + 1], side[1])


def _copy(out: np.ndarray, row: int, col: int, elems: float) -> None:
    out[row, col] += elems
    out[row, I.I_NODES] += 1.0


def inserted_table(table: LayerTable, choice: np.ndarray, target: CpuTarget) -> np.ndarray:
    """float64 [L, B, NI]: `inserted` for every bit choice column of `choice` [L, B]."""
    if not np.isin(table.kind_code, (_CONV, _POOL)).any():  # no layout-changing layer
        return np.zeros((len(table), choice.shape[1], I.NI))
    # bit choices with the same kernel paths insert the same copies: one walk per distinct column
    unique, column = np.unique(choice, axis=1, return_inverse=True)
    each = np.stack([inserted(table, unique[:, b], target) for b in range(unique.shape[1])],
                    axis=1)
    return each[:, column.ravel()]
