"""`simulate` of a file whose one weight initializer several MatMuls read counts it once, as
the file stores it and as the compile's plan counts it (SwiftF0's DFT MatMuls: a W8 file read
back with a dequantised copy per reader counted +7 kB, its fp32 baseline 1.113 MB for 1.088).

Oracles: the bytes of the initializers the file's MatMuls read as their weight (codes, scales,
zero points, bias: each distinct one once), and the two-reader model's fp32 float initializer.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgesim import api
from tests.compiler.test_shared_weights import K, N, matmul_chain

# the inputs of each op that hold its stored weight (codes, scales, zero points) and bias
WEIGHT_INPUTS = {"MatMulIntegerToFloat": (1, 3, 5, 6), "MatMulNBits": (1, 2, 3, 4, 5),
                 "Gemm": (1, 2), "MatMul": (1,)}


def stored_weight_bytes(path, slots: str = "all") -> int:
    """Bytes of the distinct initializers the file's MatMuls read as their weight and bias
    (`slots="bias"`: as their bias only)."""
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t).nbytes for t in model.graph.initializer}
    names = {n.input[i] for n in model.graph.node for i in WEIGHT_INPUTS.get(n.op_type, ())
             if i < len(n.input) and n.input[i] in inits
             and (slots == "all" or i == WEIGHT_INPUTS[n.op_type][-1])}
    return sum(inits[t] for t in names)


@pytest.mark.parametrize("bits", ["fp32", 8, 4])
def test_a_weight_two_matmuls_read_is_counted_once(tmp_path, bits) -> None:
    out = tmp_path / "q.onnx"
    api.quantize(matmul_chain(2), bits, out, calib_random=4)
    sim = api.simulate(str(out), "rpi5")
    assert sim.total.weight_bytes == stored_weight_bytes(out)
    # the file's float self: one float [K, N] weight, and the float bias it stores (W4's
    # bias correction adds one)
    assert sim.fp32.weight_bytes == K * N * 4 + stored_weight_bytes(out, "bias")
    readers = [x for x in sim.layers if x.kind == "linear"]
    assert len(readers) == 2 and readers[1].weight_bytes == 0  # held by the first reader
    if bits != "fp32":  # the file is stored smaller than the float weight: it is quantised
        assert np.all([x.w_bits == bits for x in readers]) and stored_weight_bytes(out) < K * N * 4


def test_a_dynamic_files_shared_weight_is_counted_once(tmp_path) -> None:
    """onnxruntime's quantize_dynamic stores the weight once for both MatMulIntegers: the file
    is as large as the one-reader model's, and so is simulate's count."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sims, sizes = [], []
    for readers in (1, 2):
        src, out = tmp_path / f"f{readers}.onnx", tmp_path / f"d{readers}.onnx"
        onnx.save(matmul_chain(readers), src)
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
        sizes.append(sum(numpy_helper.to_array(t).nbytes for t in onnx.load(out).graph.initializer))
        sims.append(api.simulate(str(out), "rpi5"))
    assert sizes[0] == sizes[1]  # the oracle: one stored weight either way
    assert [x.w_bits for x in sims[1].layers if x.kind == "linear"] == [8, 8]
    assert sims[1].total.weight_bytes == sims[0].total.weight_bytes
    assert sims[1].fp32.weight_bytes == K * N * 4
