"""Calibration data for the product layer: a `.npz` keyed by input name, or random samples.

Arrays in a calibration file are laid out as the model input is, with the samples along the
input's batch axis (`Graph.batch_axis`: axis 0, or e.g. axis 1 of a recurrent state
`[2, S, H]`); an input without a batch axis holds one value, used for every sample. Inside,
`CalibrationData` keeps every input samples-first, `[S, *sample_shape]`; `batches(g, ...)`
cuts them into feed dicts at the graph's static batch size, in the model's layout again.
Every problem with the data (a missing or unknown key, a wrong shape or dtype, NaN or
infinity, an index outside the gather table it indexes, no samples) is one `UserError`
naming the file and the key.

Random samples (when no data is given) are standard-normal for float inputs; integer inputs
that index a gather table get uniform indices below the table's smallest size, other integer
inputs (attention masks) are all ones. Reports must say that random data was used.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.ir import Graph
from edgesim.errors import UserError


@dataclass(frozen=True)
class CalibrationData:
    """Validated samples per graph input, and where they came from."""

    samples: Mapping[str, np.ndarray]  # input -> [S, *sample_shape]
    source: str
    random: bool = False

    @property
    def count(self) -> int:
        return int(next(iter(self.samples.values())).shape[0])


def _sample_shape(g: Graph, name: str) -> tuple[int, ...]:
    """The input's shape without its batch axis (the whole shape if it has none)."""
    shape, axis = g.types[name].shape, g.batch_axis(name)
    return shape if axis is None else shape[:axis] + shape[axis + 1:]


def _layout(g: Graph, name: str, count: str) -> str:
    """The expected file layout of input `name`, `count` standing for the samples."""
    dims = [str(d) for d in g.types[name].shape]
    axis = g.batch_axis(name)
    if axis is not None:
        dims[axis] = count
    return f"[{', '.join(dims)}]"


def model_layout(g: Graph, name: str, x: np.ndarray) -> np.ndarray:
    """Samples-first `x` [S, *sample_shape] in the model's layout (samples on the batch
    axis; an input without one takes the first sample's value)."""
    axis = g.batch_axis(name)
    # asarray: x[0] of a rank-0 input's [S] samples is a numpy scalar, which onnxruntime refuses
    return np.asarray(x[0]) if axis is None else np.moveaxis(x, 0, axis)


# Declared bytes of one .npz member accepted before it is read (a hostile header can declare
# any shape; np.load would try to allocate it).
MAX_ARRAY_BYTES = 8 * 2**30


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _check_headers(path: Path) -> None:
    """Every member's declared shape and dtype, read from its .npy header, is bounded."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            with z.open(info) as f:
                reader = _HEADER_READERS.get(np.lib.format.read_magic(f))
                if reader is None:  # a format version np.load judges itself
                    continue
                shape, _, dtype = reader(f)
            size = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if size > MAX_ARRAY_BYTES:
                raise UserError(f"{path}: {info.filename}", f"declares {size} bytes "
                                f"(shape {shape}); at most {MAX_ARRAY_BYTES} are accepted")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        _check_headers(path)
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise UserError(str(path), "no such calibration file") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(str(path), f"not a readable .npz file ({e})") from None


def _check_names(g: Graph, arrays: Mapping[str, np.ndarray], where: str) -> None:
    missing = [n for n in g.inputs if n not in arrays]
    unknown = sorted(set(arrays) - set(g.inputs))
    if missing or unknown:
        raise UserError(where, f"keys must be the model inputs {list(g.inputs)}: "
                        f"missing {missing}, unknown {unknown}")


def _samples_first(g: Graph, name: str, x: np.ndarray, where: str) -> np.ndarray:
    """`x` in the model's layout -> [S, *sample_shape] (checked)."""
    shape, axis = g.types[name].shape, g.batch_axis(name)
    if axis is None:
        if tuple(x.shape) != shape:
            raise UserError(f"{where}: {name}", f"shape {tuple(x.shape)}, expected "
                            f"{list(shape)} (the input has no batch axis: one value)")
        return x[None]
    rest = tuple(x.shape[:axis]) + tuple(x.shape[axis + 1:])
    if x.ndim != len(shape) or rest != _sample_shape(g, name) or x.shape[axis] == 0:
        what = "samples" if axis == 0 else f"samples on axis {axis}"
        raise UserError(f"{where}: {name}", f"shape {tuple(x.shape)}, expected "
                        f"{_layout(g, name, 'samples')} ({what} >= 1)")
    return np.moveaxis(x, axis, 0)


def _check_array(g: Graph, name: str, x: np.ndarray, where: str) -> np.ndarray:
    spec = g.types[name]
    x = _samples_first(g, name, x, where)
    want_float = np.dtype(spec.dtype).kind == "f"
    if x.dtype.kind not in ("f" if want_float else "iu"):
        raise UserError(f"{where}: {name}", f"dtype {x.dtype}, the model input is {spec.dtype}")
    if want_float and not np.all(np.isfinite(x)):
        raise UserError(f"{where}: {name}", "holds NaN or infinity")
    bound = None if want_float or not x.size else _index_bound(g, name)
    if bound is not None and not -bound <= x.min() <= x.max() < bound:
        # onnxruntime would stop inside the analysis with "indices element out of data bounds"
        raise UserError(f"{where}: {name}", f"values {x.min()}..{x.max()} index a table of "
                        f"{bound} rows (valid: {-bound}..{bound - 1})")
    return x.astype(spec.dtype)


def validate(g: Graph, arrays: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Check names, shapes, dtypes and values of calibration arrays; cast to input dtypes.

    Raises:
        UserError: naming `where` and the offending key.
    """
    _check_names(g, arrays, where)
    out = {n: _check_array(g, n, np.asarray(arrays[n]), where) for n in g.inputs}
    counts = {n: x.shape[0] for n, x in out.items() if g.batch_axis(n) is not None}
    if len(set(counts.values())) > 1:
        raise UserError(where, f"inputs hold different sample counts {counts}")
    count = next(iter(counts.values()), 1)
    whole_batch(g, count, where)
    # an input without a batch axis: its one value stands for every sample
    return {n: x if n in counts else np.repeat(x, count, axis=0) for n, x in out.items()}


LABELS_KEY = "labels"


def read(g: Graph, path: str | os.PathLike) -> CalibrationData:
    """Calibration samples from a `.npz` keyed by input name; its optional `labels` are
    checked and dropped (the same files `compile --calib` takes)."""
    data, _ = read_labelled(g, path)
    return data


def read_labelled(g: Graph, path: str | os.PathLike
                  ) -> tuple[CalibrationData, np.ndarray | None]:
    """Samples from a `.npz` keyed by input name, plus optional integer class labels under
    the key `labels` (one per sample)."""
    path = Path(path)
    arrays = _read_npz(path)
    labels = arrays.pop(LABELS_KEY, None)
    return from_arrays(g, arrays, str(path), labels)


def from_arrays(g: Graph, arrays: Mapping[str, np.ndarray], source: str,
                labels: np.ndarray | None = None) -> tuple[CalibrationData, np.ndarray | None]:
    """Validated samples (and labels) from in-memory arrays; `source` names them in errors."""
    checked = validate(g, arrays, source)
    count = next(iter(checked.values())).shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (count,) or labels.dtype.kind not in "iu":
            raise UserError(f"{source}: {LABELS_KEY}", f"expected {count} integer labels, got "
                            f"{labels.dtype} {labels.shape}")
    return CalibrationData(checked, f"{source} ({count} samples)"), labels


def _index_bound(g: Graph, name: str) -> int | None:
    """Smallest table size among gathers indexed by input `name`, if any."""
    sizes = [g.types[layer.inputs[0]].shape[layer.attrs["axis"]]
             for layer in g.consumers().get(name, [])
             if layer.kind == "gather" and layer.inputs[1] == name]
    return min(sizes) if sizes else None


def _random_input(g: Graph, name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    spec = g.types[name]
    shape = (n, *_sample_shape(g, name))
    if np.dtype(spec.dtype).kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    bound = _index_bound(g, name)
    if bound is None:
        return np.ones(shape, spec.dtype)
    return rng.integers(0, bound, shape).astype(spec.dtype)


def check_sample_count(n: int) -> None:
    """Raise `UserError` unless `n` (`--calib-random`) is at least one sample."""
    if n < 1:
        raise UserError("--calib-random", f"needs at least 1 sample, got {n}")


def random_samples(g: Graph, n: int, seed: int = 0) -> CalibrationData:
    """`n` random samples per input (see the module docstring)."""
    check_sample_count(n)
    whole_batch(g, n, "--calib-random")
    rng = np.random.default_rng(seed)
    arrays = {name: _random_input(g, name, n, rng) for name in g.inputs}
    return CalibrationData(arrays, f"{n} random samples (no calibration data given)", True)


def whole_batch(g: Graph, count: int, where: str) -> None:
    """Raise unless `count` samples fill at least one batch of the graph's static batch size
    (`batches` drops a partial batch: with fewer samples nothing would be calibrated).

    Raises:
        UserError: naming `where`, the sample count and the batch size.
    """
    size = batch_size(g)
    if count < size:
        raise UserError(where, f"{count} sample(s), fewer than the model's static batch size "
                        f"{size}: give at least {size}")


def batch_size(g: Graph) -> int:
    """The graph's static batch size (1 if no input has a batch axis)."""
    sizes = [g.types[n].shape[a] for n in g.inputs if (a := g.batch_axis(n)) is not None]
    return sizes[0] if sizes else 1


def batched_shape(g: Graph, name: str, size: int) -> tuple[int, ...]:
    """Input `name`'s shape at batch size `size`."""
    shape, axis = g.types[name].shape, g.batch_axis(name)
    return shape if axis is None else (*shape[:axis], size, *shape[axis + 1:])


def batches(g: Graph, data: CalibrationData) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts at the graph's batch size, in the model's layout; leftover samples that do
    not fill a batch are dropped (a graph with batch 1 uses every sample)."""
    size = batch_size(g)
    for start in range(0, data.count - size + 1, size):
        yield {n: model_layout(g, n, x[start:start + size]) for n, x in data.samples.items()}


def split(data: CalibrationData, held: int) -> tuple[CalibrationData, CalibrationData]:
    """(`data` without the held samples, the held samples): `held` samples spread evenly
    over the data set (one data set ordered by class gives every class to both parts)."""
    mask = held_mask(data.count, held)
    part = lambda m: CalibrationData({n: x[m] for n, x in data.samples.items()},  # noqa: E731
                                     data.source, data.random)
    return part(~mask), part(mask)


def held_mask(count: int, held: int) -> np.ndarray:
    """Which of `count` samples `split(data, held)` holds out (bool [count])."""
    mask = np.zeros(count, bool)
    mask[::max(2, count // max(1, held))] = True
    return mask
