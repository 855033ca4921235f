"""Activation ranges chosen end to end: on a model where the locally best range of a tensor
is end-to-end worse, `refine_end_to_end` finds the assignment a brute force over every
combination of candidates finds (the model's output recomputed here in numpy, with weights
its int8 grid holds exactly), and it follows the calibration data it is given; min/max stays
unless another assignment is clearly better, and the number of assignments run is bounded."""

from __future__ import annotations

import itertools

import numpy as np
from onnx import TensorProto, helper

from compiler.activation_quant import ActivationParams
from compiler.frontend import load
from compiler.passes.calibrate import CalibrationStats, calibrate
from compiler.passes.quantize import QuantOptions, quantize
from compiler.range_choice import CANDIDATES, choose_methods, with_choices
from compiler.range_search import reference_cases, refine_end_to_end
from tests.compiler.opcheck import graph_model

S, D, T = 256, 16, 6.0  # rows, channels, the ReLU's threshold
F = TensorProto.FLOAT
# output weights: integers with 127 in every output channel, so int8 per channel holds them
W2 = np.random.default_rng(2).integers(-127, 128, (D, D)).astype(np.float32)
W2[0] = 127.0


def _model():
    """x -> (x @ I - T) -> ReLU -> @ W2: only x's tail above T reaches the output, so the
    error of clipping that tail is all the output sees, while the reader of x (the identity)
    sees the bulk's rounding too."""
    nodes = [helper.make_node("Gemm", ["x", "eye", "bias"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = {"eye": np.eye(D, dtype=np.float32), "bias": np.full(D, -T, np.float32),
             "w2": W2}
    return graph_model(nodes, [("x", F, [S, D])], [("y", F, None)], inits)


def _batches(seed: int, tail: bool) -> list[dict[str, np.ndarray]]:
    """Student-t (2 degrees of freedom, heavy tail) or Gaussian rows."""
    rng = np.random.default_rng(seed)
    draw = (lambda: rng.standard_t(2.0, (S, D))) if tail else (
        lambda: rng.standard_normal((S, D)) * 2.0)
    return [{"x": draw().astype(np.float32)} for _ in range(6)]


def _fq(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """uint8 QuantizeLinear -> DequantizeLinear (ONNX semantics), in float64."""
    q = np.clip(np.rint(x / np.float32(scale)) + zp, 0, 255)
    return (q - zp) * np.float64(np.float32(scale))


def _oracle_error(params, choice: dict[str, str], batches) -> float:
    """Relative squared output error of the W8A8 model with these ranges, in numpy."""
    err = energy = 0.0
    for b in batches:
        x = b["x"].astype(np.float64)
        ref = np.maximum(x - T, 0) @ W2
        px, pr = (params[t][choice[t]] for t in ("x", "r"))
        r = np.maximum(_fq(x, px.scale, px.zero_point) - T, 0)
        got = _fq(r, pr.scale, pr.zero_point) @ W2
        err, energy = err + float(np.sum((got - ref) ** 2)), energy + float(np.sum(ref ** 2))
    return err / energy


def _brute_force(stats: CalibrationStats, batches) -> dict[tuple[str, str], float]:
    params = {t: {m: stats.params(t, 8, m) for m in CANDIDATES} for t in ("x", "r")}
    return {(mx, mr): _oracle_error(params, {"x": mx, "r": mr}, batches)
            for mx, mr in itertools.product(CANDIDATES, repeat=2)}


def _choose(g, stats: CalibrationStats, batches) -> tuple[dict[str, str], dict[str, str]]:
    bits = np.full((len(g.layers), 2), 8)
    bits[[la.kind != "linear" and la.kind != "matmul" for la in g.layers]] = 32
    local = choose_methods(g, stats, batches, tensors=("x", "r"))
    chosen, evals = refine_end_to_end(
        stats, local, lambda s: quantize(g, bits, s, QuantOptions()),
        reference_cases(g, batches), max_evaluations=64)
    assert 1 <= evals <= 16  # distinct assignments only: at most every combination
    return local, chosen


def test_end_to_end_choice_is_the_brute_force_optimum_where_the_local_one_is_not() -> None:
    g, calib = load(_model()), _batches(0, tail=True)
    stats = calibrate(g, calib, tensors=("x", "r"))
    local, chosen = _choose(g, stats, calib)
    oracle = _brute_force(stats, calib)
    best = min(oracle.values())
    assert oracle[local["x"], local["r"]] > 2.0 * best  # the construction: local loses
    assert oracle[chosen["x"], chosen["r"]] <= best * 1.01


def test_the_choice_follows_the_calibration_data_only() -> None:
    """Statistics and scoring on heavy-tailed calibration data: the choice is that data's
    optimum, though on Gaussian held-out data another assignment would be better."""
    g, calib, held_out = load(_model()), _batches(0, tail=True), _batches(1, tail=False)
    stats = calibrate(g, calib, tensors=("x", "r"))
    _, chosen = _choose(g, stats, calib)
    on_calib, on_held_out = _brute_force(stats, calib), _brute_force(stats, held_out)
    pick = (chosen["x"], chosen["r"])
    assert on_calib[pick] <= min(on_calib.values()) * 1.01
    assert on_held_out[pick] > 1.5 * min(on_held_out.values())


def test_resolved_parameters_are_read_by_auto_and_dropped_with_a_new_choice() -> None:
    g, calib = load(_model()), _batches(0, tail=True)
    stats = calibrate(g, calib, tensors=("x", "r"))
    params = {"x": {m: stats.params("x", 8, m) for m in CANDIDATES}}
    marked = {"x": {**params["x"], "mse": stats.params("x", 8, "minmax")}}  # a stand-in
    held = with_choices(stats, {"x": "mse"}, 8, marked)
    assert held.params("x", 8, "auto") == stats.params("x", 8, "minmax")
    assert held.params("x", 4, "auto") == stats.params("x", 4, "percentile")  # other width
    again = with_choices(held, {"x": "entropy"}, 8)  # no parameters given: recomputed
    assert again.params("x", 8, "auto") == stats.params("x", 8, "entropy")


def _table_search(errors: dict[tuple[str, str], float], max_evaluations: int = 64):
    """`refine_end_to_end` over two tensors "a", "b" whose end-to-end error is looked up in
    `errors` (the quantizer hands the choice on; the runner outputs sqrt(error))."""
    params = {t: {m: ActivationParams(np.float32(i + 1), 0, 8, False)
                  for i, m in enumerate(CANDIDATES)} for t in ("a", "b")}

    def runner(choice):
        e = errors[choice.chosen["a", 8], choice.chosen["b", 8]]
        return lambda feeds: {"y": np.array([np.sqrt(e)])}

    cases = (({}, {"y": np.zeros(1)}),)
    return refine_end_to_end(CalibrationStats(), {"a": "mse", "b": "mse"}, lambda s: s,
                             cases, max_evaluations=max_evaluations, params=params,
                             runner=runner)


def test_min_max_is_kept_unless_another_assignment_is_clearly_better() -> None:
    """A zero reference makes `output_error` the table's error times one constant (the
    energy floor), so the table is the oracle of every comparison."""
    errors = {k: 1.0 for k in itertools.product(CANDIDATES, repeat=2)}
    errors["mse", "mse"] = 0.85   # the local choice: 15 % better, within the margin
    chosen, _ = _table_search(errors)
    assert chosen == {"a": "minmax", "b": "minmax"}
    errors["entropy", "entropy"] = 0.5  # a uniform start 2x better: taken
    errors["entropy", "mse"] = 0.3  # and the greedy step on "b" improves it further
    chosen, _ = _table_search(errors)
    assert chosen == {"a": "entropy", "b": "mse"}
    chosen, evals = _table_search(errors, max_evaluations=5)
    assert (chosen, evals) == ({"a": "entropy", "b": "entropy"}, 5)  # the 5 starts only
