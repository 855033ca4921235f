"""`edgesim validate`: profile parsing, node -> layer mapping, grouping and the arithmetic."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgesim import node_map, profile_runs
from edgesim import validate as V
from edgesim.api import load_graph
from edgesim.cli import main
from edgesim.errors import UserError
from edgesim.host_check import host_mismatch
from hwmodels.probe import host_arch, target_yaml
from hwmodels.target import load_target


@pytest.fixture(scope="module")
def digits():
    return load_graph("zoo:digits_cnn")


@pytest.fixture(scope="module")
def here():
    """A CPU target of this machine's architecture claiming no ISA feature and one core: one
    this machine could be (the mapping tests need no probe)."""
    return dataclasses.replace(load_target("rpi5"), name="here", arch=host_arch(), isa=(),
                               cores=1)


def test_node_times_are_medians_of_kernel_events_in_ms():
    events = [{"cat": "Node", "name": "a_kernel_time", "dur": d} for d in (30, 10, 20)]
    events += [{"cat": "Node", "name": "a_fence_before", "dur": 999},
               {"cat": "Session", "name": "model_run", "dur": 999},
               {"cat": "Node", "name": "b_kernel_time", "dur": 5}]
    assert V.node_times(events) == {"a": pytest.approx(0.020), "b": pytest.approx(0.005)}
    # the fastest run per node (a shared machine: preemption only adds time)
    assert V.node_times(events, "min") == {"a": pytest.approx(0.010), "b": pytest.approx(0.005)}


def test_profiler_floor_is_a_line_through_two_chains_and_comes_off_each_node():
    # 1-input nodes read 0.9 us above their unprofiled cost, 9-input ones 2.1 us:
    # b = (2.1 - 0.9) / 8 = 0.15 us per input, a = 0.9 - 0.15 = 0.75 us
    a, b = V.fit_floor([(1, 0.9), (9, 2.1)])
    assert (a, b) == (pytest.approx(0.75), pytest.approx(0.15))
    # a falling line (noise) keeps no negative slope; an intercept below 0 is clipped
    assert V.fit_floor([(1, 1.0), (9, 0.5)]) == (1.0, 0.0)
    assert V.fit_floor([(1, 0.1), (9, 2.5)]) == (0.0, pytest.approx(0.3))
    net = V.net_of_floor({"conv": 0.010, "relu": 0.002, "tiny": 0.0005},
                         {"conv": 9, "relu": 1, "tiny": 1}, (0.75, 0.15))
    # 10 us - (0.75 + 9 * 0.15) us; 2 us - 0.9 us; a node under its floor reads 0
    assert net == {"conv": pytest.approx(0.010 - 0.0021), "relu": pytest.approx(0.0011),
                   "tiny": 0.0}


@pytest.mark.ort
def test_profiler_floor_is_measured_at_the_threads_asked(tmp_path):
    for threads in (1, 2):
        a, b = V.profiler_floor_us(threads, 5, "min", tmp_path)
        assert 0.0 <= a < 1e3 and 0.0 <= b < 1e3
    assert (tmp_path / "floor9.onnx").exists()  # the 9-input Sum chain onnxruntime ran


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
    got = node_map.assign_nodes(nodes, digits)
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
    got = node_map.assign_nodes(nodes, g)
    assert set(got.values()) == {idx[conv]} and len(got) == 3


def test_layers_no_node_ran_join_the_layer_they_feed(digits):
    idx = {layer.name: i for i, layer in enumerate(digits.layers)}
    ran = {idx["bn1/Relu"], idx["conv2/Conv"], idx["fc/Gemm"]}
    group = node_map.layer_groups(digits, ran)
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
def test_validate_maps_every_node_and_covers_every_layer_once(digits, here, bits):
    v = V.validate("zoo:digits_cnn", here, bits=bits, runs=3)
    layers = [name for r in v.rows for name in r.layers]
    assert sorted(layers) == sorted(layer.name for layer in digits.layers)
    assert v.unmapped_nodes == ()
    assert sum(r.measured_ms for r in v.rows) == pytest.approx(v.node_sum_ms)
    assert sum(r.predicted_ms for r in v.rows) == pytest.approx(v.predicted_ms)
    assert v.total_error == pytest.approx(v.predicted_ms / v.measured_ms - 1.0)
    # the noise check read the same runs: 3 runs, the cold one dropped, one thread
    assert v.noise is not None and v.noise.clean_share == 1.0 and v.noise.spread >= 0.0
    assert min(v.profiler_us) >= 0.0


@pytest.mark.ort
def test_cli_validate_prints_json(capsys, here, tmp_path):
    (tmp_path / "here.yaml").write_text(target_yaml(here))
    assert main(["validate", "zoo:digits_cnn", "--target", str(tmp_path / "here.yaml"),
                 "--runs", "2", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["target"] == "here" and out["threads"] == 1 and out["warning"] == ""
    # a target this machine could be: no warning but, on a loaded machine, the noise line
    noisy = [line for line in captured.err.splitlines() if "measurements were noisy" in line]
    assert captured.err.splitlines() == noisy and len(noisy) == bool(out["noise"]["reasons"])
    assert {"median_abs_err", "within_25", "total_error"} <= set(out["summary"])
    # (a node no slower than the profiler's floor reads 0 ms net: its row has no error)
    assert all(r["error"] == pytest.approx(r["predicted_ms"] / r["measured_ms"] - 1)
               for r in out["rows"] if r["measured_ms"] > 0)


def test_table_ends_with_the_noise_line_only_when_disturbed(digits):
    row = V.Row(("a",), ("a",), 1.0, 1.0)
    quiet = profile_runs.assess({"a": [1.0, 1.0]}, 1, 1, 1)
    loud = profile_runs.assess({"a": [1.0, 2.0, 2.0]}, 2, 2, 1)  # spread 100 %
    v = V.Validation("m", "t", "fp32", 1, (row,), 1.0, 1.0, 1.0, (), 2, "", quiet)
    assert "noisy" not in V.format_table(v)
    last = V.format_table(dataclasses.replace(v, noise=loud)).splitlines()[-1]
    assert last.startswith("measurements were noisy (run-to-run spread 100% > 15%)")  # 99.9
    assert V.Validation.__dataclass_fields__["noise"].default is None
    assert json.loads(json.dumps(dataclasses.replace(v, noise=loud).to_dict()))["noise"][
        "reasons"] == ["run-to-run spread 100% > 15%"]


@pytest.mark.ort
def test_cli_validate_takes_input_shapes(capsys, here, tmp_path):
    """A model with dynamic height and width (nudenet's YOLOv8) is validated at the shape
    `--input-shape` gives, as `simulate` predicts it there (validate had no such flag, while
    its error message asked for one)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal(
        (8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, "h", "w"])], [w])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    (tmp_path / "here.yaml").write_text(target_yaml(here))
    common = [str(model), "--target", str(tmp_path / "here.yaml"), "--input-shape",
              "x=1x3x24x32", "--threads", "1", "--json"]
    assert main(["simulate", *common]) == 0
    simulated = json.loads(capsys.readouterr().out)
    assert main(["validate", *common, "--runs", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predicted_ms"] == pytest.approx(simulated["total"]["latency_ms"])
    assert [name for r in out["rows"] for name in r["layers"]] == [
        row["name"] for row in simulated["layers"]]


def test_host_mismatch_refuses_another_architecture_or_kind():
    rpi5 = load_target("rpi5")  # arm64
    refusal, warning = host_mismatch(rpi5, "x86_64", ("avx2",), 2)
    assert "rpi5 is an arm64 target and this machine is x86_64" in refusal and warning == ""
    refusal, _ = host_mismatch(load_target("cortex-m7"), "arm64", ("neon",), 4)
    assert refusal.startswith("cortex-m7 is a mcu target, not a CPU running onnxruntime")
    assert "edgesim target probe" in refusal and "\n" not in refusal


def test_host_mismatch_warns_on_features_or_cores_this_machine_lacks():
    rpi5 = load_target("rpi5")  # isa [neon, dotprod, fp16], 4 cores
    assert host_mismatch(rpi5, "arm64", ("neon", "dotprod", "fp16"), 4) == ("", "")
    # a Pi 4 (A72: no dot product, no fp16 arithmetic) with 4 cores
    refusal, warning = host_mismatch(rpi5, "arm64", ("neon",), 4)
    assert refusal == "" and "ISA features this machine lacks (dotprod, fp16)" in warning
    assert "cores" not in warning
    _, warning = host_mismatch(rpi5, "arm64", ("neon", "dotprod", "fp16"), 2)
    assert warning.startswith("rpi5 claims 4 cores (this machine has 2)")


def test_validate_refuses_a_target_of_another_architecture(monkeypatch, capsys):
    other = "arm64" if host_arch() == "x86_64" else "x86_64"
    target = dataclasses.replace(load_target("rpi5"), arch=other)
    with pytest.raises(UserError, match=f"is an {other} target and this machine is"):
        V.validate("zoo:digits_cnn", target, runs=1)
    # the CLI: one line naming --target, exit 2, before any model is run
    monkeypatch.setattr("hwmodels.probe.host_arch", lambda: "x86_64")
    assert main(["validate", "zoo:digits_cnn", "--target", "rpi5", "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgesim: --target: rpi5 is an arm64 target") and "\n" not in err


@pytest.mark.ort
def test_cli_validate_warns_on_one_line(capsys, here, tmp_path):
    (tmp_path / "big.yaml").write_text(target_yaml(dataclasses.replace(here, cores=4096)))
    assert main(["validate", "zoo:digits_cnn", "--target", str(tmp_path / "big.yaml"),
                 "--runs", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warning"].startswith("here claims 4096 cores")
    assert captured.err.startswith("edgesim: warning: here claims 4096 cores")
    assert captured.err.count("\n") == 1 + bool(json.loads(captured.out)["noise"]["reasons"])
