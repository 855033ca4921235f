"""`--kernel-check report`: a layer onnxruntime runs with another kernel than planned is
costed for the kernel that runs (its row of the format policy, read back from the kernel)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from compiler.formats import FORMAT_CODE, Policy, resolve
from compiler.frontend import load
from edgesim import assignment, zoo
from edgesim.api import resolve_target
from edgesim.kernel_check import KernelRow, recost, running_row, with_running_costs
from edgesim.report import LayerRow
from edgesim.simulation import Totals
from hwmodels import cpu


@pytest.mark.parametrize(("kind", "kernel", "quantized", "row"), [
    ("conv", "QLinearConv", True, "qlinear_conv"),
    ("conv", "ConvInteger", True, "dynamic_int8_conv"),
    ("linear", "MatMulNBits/acc4", True, "nbits_int8"),
    ("linear", "MatMulNBits/acc0", True, "nbits_fp32"),
    ("conv", "fp32", True, "qdq_float"),   # the plan's Q / DQ nodes stay around the float op
    ("conv", "", False, "float"),
    ("linear", "MatMulIntegerToFloat+fp32", True, None),  # two kernels: no single row
])
def test_running_row_reads_the_policy_backwards(kind, kernel, quantized, row):
    assert running_row(kind, kernel, quantized) == row


def _forced():
    """digits_cnn planned W8A8 on rpi5, its second conv forced to run as fp32."""
    g = load(zoo.build("digits_cnn"))
    bits = assignment.uniform(g, 8)
    convs = [la for la in g.layers if la.kind == "conv"]
    rows = [KernelRow(la.name, "conv", "QLinearConv", "fp32" if la is convs[1] else
                      "QLinearConv") for la in convs]
    return g, bits, convs[1].name, rows


def test_forced_mismatch_is_costed_as_the_row_the_policy_gives_those_bits():
    """Oracle: the row a float op between Q / DQ nodes is (qdq_float) is what the policy
    resolves at 4-bit activations, so the cost model on the unplanned table at (8, 4) gives
    the mismatched layer's cost for what runs."""
    g, bits, name, rows = _forced()
    target = resolve_target("rpi5")
    found = recost(g, bits, target, rows)
    assert list(found) == [name]
    row, cost = found[name]
    assert row == resolve("conv", True, 8, 4, Policy()).name == "qdq_float"
    i = [la.name for la in g.layers].index(name)
    oracle = cpu.evaluate(g.layer_table(), np.array([(8, 4)]), target)
    assert cpu.format_codes(g.layer_table(), np.array([(8, 4)]), target)[i, 0] == \
        FORMAT_CODE["qdq_float"]
    assert cost.latency_s[0, 0] == pytest.approx(oracle.latency_s[i, 0], rel=1e-9)
    planned = cpu.evaluate(g.layer_table(), np.array([(8, 8)]), target)
    assert cost.latency_s[0, 0] != pytest.approx(planned.latency_s[i, 0], rel=1e-6)


@dataclass(frozen=True)
class _Result:  # the fields of edgesim.report.CompileResult the report step reads
    layers: tuple
    result: Totals
    notes: tuple


def test_report_rows_totals_and_note_follow_what_runs():
    g, bits, name, rows = _forced()
    target = resolve_target("rpi5")
    layers = tuple(LayerRow(r.layer, "conv", "", (1,), 0, 0, 8, 8, "qdq", None, 1.0, 1.0, 1.0,
                            0.0, "compute", "", planned_kernel=r.planned,
                            onnxruntime_kernel=r.onnxruntime) for r in rows)
    before = _Result(layers, Totals(len(layers) * 1.0, len(layers) * 1e-3, 0.0, 0.0), ())
    after = with_running_costs(before, g, bits, target)
    _, cost = recost(g, bits, target, rows)[name]
    changed = {x.name: x for x in after.layers if x != before.layers[[y.name for y in
                                                                       layers].index(x.name)]}
    assert list(changed) == [name]
    assert changed[name].latency_ms == pytest.approx(cost.latency_s[0, 0] * 1e3)
    assert "costed as qdq_float" in changed[name].note
    assert after.result.latency_ms == pytest.approx(
        len(layers) - 1 + cost.latency_s[0, 0] * 1e3)
    assert len(after.notes) == 1 and name in after.notes[0]
