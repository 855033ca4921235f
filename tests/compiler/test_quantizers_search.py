"""The pruned clip search (`quantizers._mse_ratio`) against an exhaustive numpy search.

The reference evaluates every candidate of `CLIP_RATIOS` for every group through the public
grid functions (`scale_zero_point`, `quantize_codes`, `dequantize_codes`) and sums each
group's squared float32 residuals in float64 in element order (`np.cumsum`, which adds left
to right), then takes the first minimum (the smallest ratio of equal errors). The kernel must
choose the very same ratio, and a model quantised with it must be the same file, byte for
byte, as one quantised with the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import clip_search
from compiler import quantizers as Q
from compiler.clip_search import CLIP_RATIOS
from edgesim import zoo
from edgesim.api import quantize


def exhaustive_ratio(g: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Per row of `g`, the first ratio of `CLIP_RATIOS` with the least squared error."""
    g = np.asarray(g, np.float32)
    qmin, qmax = Q.code_range(bits, symmetric)
    lo, hi = g.min(axis=1).astype(np.float64), g.max(axis=1).astype(np.float64)
    if symmetric:
        hi = np.maximum(-lo, hi)
        lo = -hi
    errs = np.empty((len(CLIP_RATIOS), g.shape[0]))
    for k, r in enumerate(CLIP_RATIOS):
        s, zp = Q.scale_zero_point(lo * r, hi * r, bits, symmetric)
        s, zp = s.astype(np.float32)[:, None], zp[:, None]
        res = Q.dequantize_codes(Q.quantize_codes(g, s, zp, qmin, qmax), s, zp) - g
        errs[k] = np.cumsum(res.astype(np.float64) ** 2, axis=1)[:, -1]
    return np.asarray(CLIP_RATIOS)[np.argmin(errs, axis=0)]  # argmin: first of equals


def _groups(kind: str, rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(-6, 3, (rows, 1)))  # groups of very different magnitudes
    draws = {"normal": lambda: rng.standard_normal((rows, n)),
             "student_t": lambda: rng.standard_t(2.0, (rows, n)),      # heavy tails
             "laplace": lambda: rng.laplace(size=(rows, n)),
             "one_sided": lambda: np.abs(rng.standard_normal((rows, n))) + 0.1,
             "few_levels": lambda: rng.integers(-3, 4, (rows, n)).astype(float)}  # exact ties
    return (draws[kind]() * scale).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["normal", "student_t", "laplace", "one_sided", "few_levels"]),
       rows=st.integers(1, 40), n=st.sampled_from([1, 2, 7, 16, 32, 33, 64, 200]),
       bits=st.sampled_from([2, 3, 4, 8]), symmetric=st.booleans(), seed=st.integers(0, 2**16))
def test_pruned_search_picks_the_exhaustive_searchs_ratio(kind: str, rows: int, n: int,
                                                          bits: int, symmetric: bool,
                                                          seed: int) -> None:
    g = _groups(kind, rows, n, seed)
    g[0, -1] *= 40.0  # an outlier: the search must clip it
    np.testing.assert_array_equal(Q._mse_ratio(g, bits, symmetric),
                                  exhaustive_ratio(g, bits, symmetric))


def test_pruned_search_on_special_groups() -> None:
    g = np.zeros((6, 32), np.float32)  # row 0: empty range, every ratio ties at error 0
    g[1] = 0.5                          # constant
    g[2, 3] = 1e-30                     # one subnormal-scale value
    g[3] = np.linspace(-7, 7, 32)       # exactly on the minmax grid at 4 bits
    g[4, ::2], g[4, 1::2] = 1.0, -1.0
    g[5] = np.float32(1e38) * np.linspace(-1, 1, 32, dtype=np.float32)  # near float32's max
    for bits, symmetric in [(4, True), (4, False), (8, True), (2, False)]:
        np.testing.assert_array_equal(Q._mse_ratio(g, bits, symmetric),
                                      exhaustive_ratio(g, bits, symmetric))


def test_the_search_keeps_minmax_where_it_is_exact() -> None:
    # values on the 4-bit minmax grid: error 0 at ratio 1, and every smaller ratio clips +-7
    g = np.linspace(-7, 7, 15, dtype=np.float32)[None, :]
    assert Q._mse_ratio(g, 4, True)[0] == 1.0


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_search_picks_the_same_ratios(threads: int) -> None:
    # large tensors are searched in pieces of _CHUNK_ROWS groups taken in turn by several
    # threads: 9000 groups are 9 pieces, the last partial
    g = _groups("student_t", 9000, 32, seed=5)
    g.flags.writeable = False  # as the loader's weights are
    args = (np.asarray(CLIP_RATIOS), -7.0, 7.0, True, float(clip_search.TINY))
    want = exhaustive_ratio(g, 4, True)
    np.testing.assert_array_equal(clip_search._threaded(g, args, threads), want)
    np.testing.assert_array_equal(Q._mse_ratio(g, 4, True), want)


@pytest.mark.parametrize(("load", "rows", "threaded"), [
    (0.0, 4096, True), (10.0, 4096, False), (10.0, 40000, True), (0.0, 1000, False)])
def test_threads_where_a_core_is_idle_or_the_tensor_is_large(
        load: float, rows: int, threaded: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = clip_search._threaded

    def spy(g: np.ndarray, *args: object) -> np.ndarray:
        calls.append(g.shape[0])
        return real(g, *args)  # type: ignore[arg-type]
    monkeypatch.setattr(clip_search, "_threaded", spy)
    monkeypatch.setattr(clip_search, "search_threads", lambda: 2)
    monkeypatch.setattr(clip_search.os, "getloadavg", lambda: (load, load, load))
    g = _groups("laplace", rows, 32, seed=7)
    np.testing.assert_array_equal(Q._mse_ratio(g, 4, True), exhaustive_ratio(g, 4, True))
    assert calls == ([rows] if threaded else [])


def test_a_failing_piece_is_raised_in_the_calling_thread(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    def fail(g: np.ndarray, *args: object) -> np.ndarray:
        raise MemoryError("piece")
    monkeypatch.setattr(clip_search, "_mse_ratio_kernel", fail)
    args = (np.asarray(CLIP_RATIOS), -7.0, 7.0, True, float(clip_search.TINY))
    with pytest.raises(MemoryError, match="piece"):
        clip_search._threaded(np.zeros((4096, 32), np.float32), args, 2)


def _emitted(model: object, out: Path) -> bytes:
    quantize(model, 4, out, kernel_check="off")
    return out.read_bytes()


@pytest.mark.parametrize("name", ["digits_cnn", "digits_transformer", "small_transformer"])
def test_emitted_w4_model_is_byte_identical_to_the_exhaustive_searchs(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = (zoo.build("minilm", vocab=500, seq=16, d=64, depth=1, heads=2, hidden=128, seed=3)
             if name == "small_transformer" else zoo.build(name))
    pruned = _emitted(model, tmp_path / "pruned.onnx")
    monkeypatch.setattr(Q, "_mse_ratio", exhaustive_ratio)
    assert _emitted(model, tmp_path / "exhaustive.onnx") == pruned
