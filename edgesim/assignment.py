"""Bit assignments: which (weight bits, activation bits) each layer runs at.

An assignment is an int array [L, 2] aligned with `Graph.layers`; 32 means float32. Only
MAC layers (conv, linear, matmul) are quantised; every other layer runs in float32.

Named uniform assignments follow what onnxruntime executes:
- `32`: everything float32;
- `8`: W8A8 (QDQ int8 around every MAC layer: QLinearConv / QLinearMatMul);
- `4`, `2`, ...: weight-only N-bit on layers with constant weights (MatMulNBits / blocked
  DequantizeLinear), activations float32; activation x activation matmuls stay float32.
A JSON file maps layer names to weight bits (`{"conv1": 4}`) or `[w_bits, a_bits]` pairs;
unnamed layers stay float32.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from compiler import formats
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph
from edgesim.errors import UserError

FLOAT = 32
W_CHOICES = (*formats.WEIGHT_BITS, FLOAT)  # the format policy's widths, and float
A_CHOICES = (*formats.ACT_BITS, FLOAT)


def quantisable(graph: Graph) -> np.ndarray:
    """Bool [L]: layers whose bits an assignment may choose (MAC layers)."""
    return np.array([KIND_CATEGORY[layer.kind] == CATEGORY_GEMM for layer in graph.layers],
                    dtype=bool)  # bool also when the graph has no layers (an index mask)


def has_weights(graph: Graph) -> np.ndarray:
    """Bool [L]: MAC layers with a constant weight operand."""
    return np.array([any(t in graph.weights for t in layer.inputs[1:2]) for layer in graph.layers],
                    dtype=bool)


def uniform(graph: Graph, w_bits: int) -> np.ndarray:
    """The uniform assignment named by `w_bits` (see the module docstring)."""
    if w_bits not in W_CHOICES:
        raise UserError("--bits", f"{w_bits} is not one of {W_CHOICES}")
    bits = np.full((len(graph.layers), 2), FLOAT, dtype=np.int64)
    mac = quantisable(graph)
    if w_bits == 8:
        bits[mac] = (8, 8)
    elif w_bits < FLOAT:
        bits[mac & has_weights(graph)] = (w_bits, FLOAT)
    return bits


def from_mapping(graph: Graph, mapping: Mapping[str, object], where: str) -> np.ndarray:
    """Assignment from {layer: w_bits | [w_bits, a_bits]}; unnamed layers stay float32."""
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    unknown = sorted(set(mapping) - set(index))
    if unknown:
        more = " ..." if len(unknown) > 5 else ""
        raise UserError(where, f"unknown layer(s) {unknown[:5]}{more}")
    mac = quantisable(graph)
    bits = np.full((len(graph.layers), 2), FLOAT, dtype=np.int64)
    for name, value in mapping.items():
        pair = _pair(value, f"{where}: {name}")
        if not mac[index[name]] and pair != (FLOAT, FLOAT):
            raise UserError(f"{where}: {name}", f"a {graph.layers[index[name]].kind} layer "
                            "has no bits to choose (only conv, linear and matmul layers do)")
        bits[index[name]] = pair
    return bits


def _pair(value: object, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, 8 if value == 8 else FLOAT)
    elif isinstance(value, list | tuple) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise UserError(where, f"expected weight bits or [w_bits, a_bits], got {value!r}")
    if pair[0] not in W_CHOICES or pair[1] not in A_CHOICES:
        raise UserError(where, f"bits {pair} not in weights {W_CHOICES} x activations {A_CHOICES}")
    return pair


def resolve(graph: Graph, spec: str | int | Mapping[str, object] | np.ndarray) -> np.ndarray:
    """Assignment from a CLI/API spec: a bit width, "fp32", a JSON path, a mapping or an array."""
    if isinstance(spec, np.ndarray):
        if spec.shape != (len(graph.layers), 2):
            raise UserError("bits", f"array shape {spec.shape}, expected ({len(graph.layers)}, 2)")
        return spec.astype(np.int64)
    if isinstance(spec, Mapping):
        return from_mapping(graph, spec, "bits")
    text = str(spec).strip().lower()
    if text in ("fp32", "float32", "float"):
        return uniform(graph, FLOAT)
    if text.isdigit():
        return uniform(graph, int(text))
    return from_mapping(graph, _read_json(Path(str(spec))), str(spec))


def _read_json(path: Path) -> Mapping[str, object]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(str(path), "no such file (expected a bit width or a JSON assignment)") \
            from None
    except json.JSONDecodeError as e:
        raise UserError(str(path), f"not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise UserError(str(path), "expected a JSON object {layer: bits}")
    return data
