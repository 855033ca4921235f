"""The compile note on a threshold: its measured share against onnxruntime's own tensors.

The note used to juxtapose the target sparsity of the input tensor with the density of the
array's im2col operand ("target 25%, measured density 0.520" on digits_cnn conv3), which
also counts the 3x3 conv's padding taps; it now gives the element share the target is
calibrated to, and the operand density with the padding's part named."""

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler.frontend import load
from edgesim.sparsity import apply_sparsity
from edgesim.zoo import build, load_digits_data
from hwmodels.target import load_target

X = load_digits_data()["x_calib"][:16].astype(np.float32)
NOTE = re.compile(r"sparsity: (\S+) input thresholded at \|x - (\S+)\| < (\S+) \(target (\d+)%, "
                  r"measured ([\d.]+)% of its elements on the float model; array operand "
                  r"(?:\(im2col\) )?density ([\d.]+)(?:, its padding taps counted as zeros "
                  r"\(([\d.]+) from padding alone\))?\)")


def _ort_tensor(model: onnx.ModelProto, name: str) -> np.ndarray:
    """Tensor `name` of the float model, run by onnxruntime one sample at a time."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.ValueInfoProto(name=name))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run([name], {"input": X[i:i + 1]})[0] for i in range(len(X))])


def test_threshold_note_counts_the_input_elements_and_names_the_padding():
    model = build("digits_cnn")
    g = load(model)
    out = apply_sparsity(g, load_target("sparse-mac-32x32"), {"input": X}, (0.0, 0.25))
    rows = [NOTE.match(n) for n in out.notes if "input thresholded" in n]
    assert rows and all(rows), out.notes
    # the first thresholded layer in graph order: its input is the float model's own tensor
    first = min(rows, key=lambda r: [x.name for x in g.layers].index(r[1]))
    layer = g.layer(first[1])
    c, t = np.float32(first[2]), np.float32(first[3])
    x = _ort_tensor(model, layer.inputs[0])
    cut = np.where(np.abs(x - c) < t, c, x)
    assert float(first[5]) / 100 == pytest.approx(np.mean(cut == c), abs=0.0006)
    assert float(first[5]) / 100 == pytest.approx(int(first[4]) / 100, abs=0.02)
    if layer.kind == "conv":  # brute-force im2col of the 3x3 pad-1 stride-1 conv
        assert layer.attrs["pads"] == (1, 1, 1, 1) or list(layer.attrs["pads"]) == [1] * 4
        padded = np.pad(cut, ((0, 0), (0, 0), (1, 1), (1, 1)))
        taps = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
        assert float(first[6]) == pytest.approx(np.mean(taps != c), abs=0.0006)
        h, w = x.shape[2:]  # closed form: each axis of n outputs covers 3n - 2 real taps
        assert float(first[7]) == pytest.approx((3 * h - 2) / (3 * h) * (3 * w - 2) / (3 * w),
                                                abs=0.0006)
