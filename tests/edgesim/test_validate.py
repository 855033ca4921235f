"""`edgesim validate`: profile parsing, node -> layer mapping, grouping and the arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgesim import validate as V
from edgesim.api import load_graph
from edgesim.cli import main


@pytest.fixture(scope="module")
def digits():
    return load_graph("zoo:digits_cnn")


def test_node_times_are_medians_of_kernel_events_in_ms():
    events = [{"cat": "Node", "name": "a_kernel_time", "dur": d} for d in (30, 10, 20)]
    events += [{"cat": "Node", "name": "a_fence_before", "dur": 999},
               {"cat": "Session", "name": "model_run", "dur": 999},
               {"cat": "Node", "name": "b_kernel_time", "dur": 5}]
    assert V.node_times(events) == {"a": pytest.approx(0.020), "b": pytest.approx(0.005)}
    # the fastest run per node (a shared machine: preemption only adds time)
    assert V.node_times(events, "min") == {"a": pytest.approx(0.010), "b": pytest.approx(0.005)}


def test_nodes_map_by_name_then_tensor_then_consumer(digits):
    idx = {layer.name: i for i, layer in enumerate(digits.layers)}
    nodes = [
        # NCHWc: named after its original output (the fused Relu's), outputs renamed
        ("bn1/Relu_output_0_nchwc", ["input"], ["reorder_token_0"]),
        # QLinearConv rewritten by onnxruntime: the layer name plus _token_<n>
        ("conv2/Conv_token_5", ["reorder_token_0"], ["conv2/Conv"]),
        # the layer's DQ node: <layer>.<step>
        ("conv2/Conv.Conv.dequantize", ["conv2/Conv"], ["bn2/BatchNormalization_output_0"]),
        # writes an IR tensor: the layer that produces it
        ("ReorderOutput", ["bn2/BatchNormalization_output_0"], ["pool/MaxPool_output_0"]),
        # writes nothing the IR has: the layer its output feeds
        ("q", ["pool/MaxPool_output_0"], ["pool/MaxPool_output_0.q"]),
        ("conv3/Conv", ["pool/MaxPool_output_0.q"], ["x"]),
        ("orphan", ["nothing"], ["nowhere"]),
    ]
    got = V.assign_nodes(nodes, digits)
    assert got == {"bn1/Relu_output_0_nchwc": idx["bn1/Relu"],
                   "conv2/Conv_token_5": idx["conv2/Conv"],
                   "conv2/Conv.Conv.dequantize": idx["conv2/Conv"],
                   "ReorderOutput": idx["pool/MaxPool"], "q": idx["conv3/Conv"],
                   "conv3/Conv": idx["conv3/Conv"]}


def test_q_and_dq_nodes_of_dotted_layer_names_map_to_their_layer():
    # MobileNetV2's layer names hold dots; onnxruntime appends /duplicated to a DQ it copies
    g = load_graph("zoo:mobilenet_v2")
    idx = {layer.name: i for i, layer in enumerate(g.layers)}
    conv = "features.5.conv.2/Conv"
    nodes = [(f"{conv}_token_40", ["a"], [conv]),
             (f"{conv}.Conv.dequantize/duplicated", [conv], ["b"]),
             (f"{conv}.Conv.dequantize", [conv], ["c"])]
    got = V.assign_nodes(nodes, g)
    assert set(got.values()) == {idx[conv]} and len(got) == 3


def test_layers_no_node_ran_join_the_layer_they_feed(digits):
    idx = {layer.name: i for i, layer in enumerate(digits.layers)}
    ran = {idx["bn1/Relu"], idx["conv2/Conv"], idx["fc/Gemm"]}
    group = V.layer_groups(digits, ran)
    assert group[idx["conv1/Conv"]] == idx["bn1/Relu"]      # fused into its Relu's node
    assert group[idx["bn2/Relu"]] == group[idx["flatten/Flatten"]] == idx["fc/Gemm"]
    assert group[idx["conv2/Conv"]] == idx["conv2/Conv"]


def test_compare_sums_predicted_and_measured_per_group(digits):
    idx = {layer.name: i for i, layer in enumerate(digits.layers)}
    predicted = np.arange(1.0, len(digits.layers) + 1)          # layer i predicts i + 1 ms
    node_layer = {"n1": idx["bn1/Relu"], "n2": idx["bn1/Relu"], "n3": idx["fc/Gemm"]}
    node_ms = {"n1": 2.0, "n2": 3.0, "n3": 4.0}
    rows = V.compare(digits, predicted, node_ms, node_layer)
    assert [r.layers[0] for r in rows] == ["bn1/Relu", "fc/Gemm"]
    first, last = rows
    assert set(first.layers) == {"conv1/Conv", "bn1/Relu"}
    assert first.predicted_ms == 1.0 + 2.0 and first.measured_ms == 2.0 + 3.0
    assert first.error == pytest.approx(3.0 / 5.0 - 1.0)
    # every other layer feeds fc/Gemm: its row predicts layers 3..10
    assert last.predicted_ms == sum(range(3, len(digits.layers) + 1))
    assert last.measured_ms == 4.0
    assert sum(len(r.layers) for r in rows) == len(digits.layers)


@pytest.mark.ort
@pytest.mark.parametrize("bits", ["fp32", "8"])
def test_validate_maps_every_node_and_covers_every_layer_once(digits, bits):
    v = V.validate("zoo:digits_cnn", "rpi5", bits=bits, runs=3)
    layers = [name for r in v.rows for name in r.layers]
    assert sorted(layers) == sorted(layer.name for layer in digits.layers)
    assert v.unmapped_nodes == ()
    assert sum(r.measured_ms for r in v.rows) == pytest.approx(v.node_sum_ms)
    assert sum(r.predicted_ms for r in v.rows) == pytest.approx(v.predicted_ms)
    assert v.total_error == pytest.approx(v.predicted_ms / v.measured_ms - 1.0)


@pytest.mark.ort
def test_cli_validate_prints_json(capsys):
    assert main(["validate", "zoo:digits_cnn", "--target", "rpi5", "--runs", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "rpi5" and out["threads"] == 1
    assert {"median_abs_err", "within_25", "total_error"} <= set(out["summary"])
    assert all(r["error"] == pytest.approx(r["predicted_ms"] / r["measured_ms"] - 1)
               for r in out["rows"])
