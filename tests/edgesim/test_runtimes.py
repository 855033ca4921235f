"""Runtime profiles through the API: side-by-side comparison and the --runtime choice."""

from __future__ import annotations

import pytest

from edgesim import api
from edgesim.cli import main
from edgesim.errors import UserError


def test_compare_runtimes_costs_the_same_layers_under_each_profile():
    sims = api.compare_runtimes("zoo:digits_cnn", "rpi5", ["onnxruntime", "ncnn"], threads=1)
    ort, ncnn = sims["onnxruntime"], sims["ncnn"]
    assert [r.name for r in ort.layers] == [r.name for r in ncnn.layers]
    assert (ort.runtime, ncnn.runtime) == ("onnxruntime", "ncnn")
    # digits_cnn's 3x3 stride-1 convs (16 -> 32 at 8x8) take Winograd F(6,3) in fp16 under
    # ncnn on the A76, im2col + fp32 SGEMM under onnxruntime: fewer MACs at twice the lanes
    conv2 = next(i for i, r in enumerate(ort.layers) if r.name == "conv2/Conv")
    assert ncnn.layers[conv2].latency_ms < ort.layers[conv2].latency_ms


def test_unknown_runtime_is_a_user_error_naming_the_choices():
    with pytest.raises(UserError, match="onnxruntime, ideal, ncnn"):
        api.simulate("zoo:digits_cnn", "rpi5", runtime="tvm")
    assert main(["simulate", "zoo:digits_cnn", "--target", "rpi5", "--runtime", "tvm"]) == 2
