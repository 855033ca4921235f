"""LSTM nodes that share W, R and B (as initializers, or as DynamicQuantizeLSTM codes) unroll
onto one weight per source tensor, so `simulate` counts each once, as the file stores it.

Oracle: the file's distinct initializer bytes (the same for one LSTM and for two sharing
them; for a float LSTM without bias, exactly W's and R's bytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import api

SEQ, BATCH, IN, H = 3, 1, 5, 4
MS = "com.microsoft"
F = TensorProto.FLOAT


def _inits(dynamic: bool, bias: bool) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(3)
    b = [numpy_helper.from_array(rng.standard_normal((1, 8 * H)).astype(np.float32), "B")]
    if dynamic:  # DynamicQuantizeLSTM: codes [D, K, 4H], a scale and zero point each
        return [numpy_helper.from_array(rng.integers(-64, 64, (1, k, 4 * H)).astype(np.int8), n)
                for n, k in (("W", IN), ("R", H))] + [
            numpy_helper.from_array(np.array([0.003], np.float32), "W_s"),
            numpy_helper.from_array(np.array([0], np.int8), "W_z"),
            numpy_helper.from_array(np.array([0.004], np.float32), "R_s"),
            numpy_helper.from_array(np.array([0], np.int8), "R_z")] + (b if bias else [])
    return [numpy_helper.from_array(rng.standard_normal((1, 4 * H, k)).astype(np.float32), n)
            for n, k in (("W", IN), ("R", H))] + (b if bias else [])


def lstms(n: int, dynamic: bool, bias: bool) -> onnx.ModelProto:
    """`n` LSTMs (DynamicQuantizeLSTMs if `dynamic`), each on its own input, all reading one
    W, R (and B)."""
    ins = ["W", "R", "B" if bias else ""]
    nodes = [helper.make_node("DynamicQuantizeLSTM", [f"X{k}", *ins, "", "", "", "", "W_s",
                                                      "W_z", "R_s", "R_z"],
                              [f"Y{k}"], f"lstm{k}", domain=MS, hidden_size=H) if dynamic
             else helper.make_node("LSTM", [f"X{k}", *ins], [f"Y{k}"], f"lstm{k}", hidden_size=H)
             for k in range(n)]
    graph = helper.make_graph(
        nodes, "lstms", [helper.make_tensor_value_info(f"X{k}", F, [SEQ, BATCH, IN])
                         for k in range(n)],
        [helper.make_tensor_value_info(f"Y{k}", F, [SEQ, 1, BATCH, H]) for k in range(n)],
        _inits(dynamic, bias))
    opsets = [helper.make_opsetid("", 17), *([helper.make_opsetid(MS, 1)] if dynamic else [])]
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 8
    return m


def _file_bytes(m: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer)


@pytest.mark.parametrize(("dynamic", "bias"), [(False, False), (False, True), (True, True)])
def test_lstms_sharing_weights_count_them_once(tmp_path: Path, dynamic: bool,
                                               bias: bool) -> None:
    sims = []
    for n in (1, 2):
        m = lstms(n, dynamic, bias)
        onnx.checker.check_model(m)
        onnx.save(m, tmp_path / f"l{n}.onnx")
        sims.append(api.simulate(str(tmp_path / f"l{n}.onnx"), "rpi5"))
    assert _file_bytes(lstms(1, dynamic, bias)) == _file_bytes(lstms(2, dynamic, bias))
    assert sims[1].total.weight_bytes == sims[0].total.weight_bytes
    assert sims[1].fp32.weight_bytes == sims[0].fp32.weight_bytes
    gemms = [x for x in sims[1].layers if x.kind == "linear"]
    assert len(gemms) == 2 * SEQ  # per LSTM: the input projection and SEQ - 1 steps
    if not dynamic and not bias:  # the GEMMs hold all the file's weights: W^T and R^T
        assert sum(x.weight_bytes for x in gemms) == _file_bytes(lstms(2, dynamic, bias))
