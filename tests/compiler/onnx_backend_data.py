"""ONNX's own backend node tests (model.onnx + input/output .pb files), fetched for the tests.

onnx >= 1.23 wheels no longer ship `onnx/backend/test/data/node`; the onnx 1.22.0 wheel does.
At test-setup time we fetch that wheel with pip (PyPI is the project's registry) into a cache
folder and read the cases straight out of the zip; nothing is vendored.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ONNX_WHEEL_VERSION = "1.22.0"
NODE_PREFIX = "onnx/backend/test/data/node/"


@dataclass(frozen=True)
class BackendCase:
    """One backend node test: the model and its reference data sets."""

    name: str
    model: onnx.ModelProto
    data_sets: tuple[tuple[dict[str, np.ndarray], list[np.ndarray]], ...]

    @property
    def op_types(self) -> frozenset[str]:
        return frozenset(n.op_type for n in self.model.graph.node)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "edgesim-tests" / f"onnx-{ONNX_WHEEL_VERSION}"


def fetch_wheel() -> Path:
    """Path of the onnx 1.22.0 wheel, downloaded with pip on first use."""
    folder = cache_dir()
    found = glob.glob(str(folder / "onnx-*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", f"onnx=={ONNX_WHEEL_VERSION}", "-d", str(folder)],
            check=True)
        found = glob.glob(str(folder / "onnx-*.whl"))
    return Path(found[0])


def _tensor(z: zipfile.ZipFile, path: str) -> np.ndarray:
    t = onnx.TensorProto()
    t.ParseFromString(z.read(path))
    return numpy_helper.to_array(t)


def _data_set(z: zipfile.ZipFile, model: onnx.ModelProto, folder: str) -> tuple:
    files = sorted(n for n in z.namelist() if n.startswith(folder) and n.endswith(".pb"))
    ins = sorted((f for f in files if "/input_" in f), key=lambda f: int(f.rsplit("_", 1)[1][:-3]))
    outs = sorted((f for f in files if "/output_" in f),
                  key=lambda f: int(f.rsplit("_", 1)[1][:-3]))
    init = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in init]
    feeds = {n: _tensor(z, f) for n, f in zip(names, ins)}
    return feeds, [_tensor(z, f) for f in outs]


def load_cases() -> list[BackendCase]:
    """Every node test case in the wheel whose data sets are plain tensors."""
    z = zipfile.ZipFile(fetch_wheel())
    names = sorted({n[len(NODE_PREFIX):].split("/")[0] for n in z.namelist()
                    if n.startswith(NODE_PREFIX) and n.endswith("model.onnx")})
    cases = []
    for name in names:
        model = onnx.load_from_string(z.read(f"{NODE_PREFIX}{name}/model.onnx"))
        sets = sorted({n.rsplit("/", 2)[0] + "/" for n in z.namelist()
                       if n.startswith(f"{NODE_PREFIX}{name}/test_data_set_")
                       and n.endswith(".pb")})
        try:
            data = tuple(_data_set(z, model, s) for s in sets)
        except Exception:  # sequences/optionals/maps: not tensors, not ours to run
            continue
        cases.append(BackendCase(name, model, data))
    return cases
