"""`compile`/`allocate` and sweeps share one allocation path (issue 19): the same design,
budget and sensitivities give the same bits and the same predicted totals either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgesim
from edgesim.loading import load_graph
from edgesim.sweep import InlineExecutor, load_space, run_sweep
from edgesim.sweep.store import RESULTS_NAME, read_results


def _sweep_alloc(tmp_path: Path, base: str, budget: str) -> dict:
    space = tmp_path / "space.yaml"
    space.write_text(f"base: {base}\nparameters:\n  op_overhead_us: [5]\n"
                     "models: [zoo:digits_cnn]\n"
                     f"optimise: {{allocate: {{budget: {budget}, w_bits: [2, 4, 8], "
                     "a_bits: 8}}\n")
    with InlineExecutor() as ex:
        run_sweep(load_space(str(space)), tmp_path / "out", executor=ex)
    _, (record,), _ = read_results(tmp_path / "out" / RESULTS_NAME)
    return record["models"]["digits_cnn"]


# Budgets tight enough that no layer stays float32: `allocate` always offers fp32 weights, a
# sweep's `w_bits` do not (at 3.5 or 4 mean bits a float layer costs more than it saves).
@pytest.mark.parametrize("budget", ["bits=4", "bits=3.5"])
def test_a_sweep_point_and_allocate_choose_the_same_bits(tmp_path, budget):
    swept = _sweep_alloc(tmp_path, "jetson-orin-nano", budget)
    alloc = edgesim.allocate("zoo:digits_cnn", "jetson-orin-nano", method="proxy",
                             budget=budget, weight_bits=(2, 4, 8), act_bits=(8,))
    g = load_graph("zoo:digits_cnn")
    index = {layer.name: i for i, layer in enumerate(g.layers)}
    chosen = [int(alloc.bits[index[name], 0]) for name in alloc.sens.layers]
    assert swept["alloc"]["w_bits"] == chosen and 32 not in chosen
    assert len(set(chosen)) > 1 or budget == "bits=4"  # 3.5 bits mix widths
    assert swept["alloc"]["total_sens"] == pytest.approx(alloc.sensitivity)
    # the other layers run at the same bits, so the whole model costs the same
    assert swept["weight_bytes"] == pytest.approx(float(alloc.cost.weight_bytes.sum()))
    assert swept["latency_s"] == pytest.approx(float(alloc.cost.latency_s.sum()))
    assert np.all(alloc.bits[:, 1] == 8)  # the roofline runs a full-integer pipeline
