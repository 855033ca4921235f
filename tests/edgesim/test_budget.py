"""Budget parsing: units convert to base units by their SI/IEC definitions."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesim.budget import format_value, parse_budget, parse_duration
from edgesim.errors import UserError


@pytest.mark.parametrize(("text", "metric", "value"), [
    ("size=2MB", "size", 2_000_000),
    ("size=1.5MiB", "size", 1.5 * 1024 * 1024),
    ("size=300kB", "size", 300_000),
    ("latency=15ms", "latency", 0.015),
    ("latency=250us", "latency", 250e-6),
    ("energy=5mJ", "energy", 5e9),          # 5 mJ = 5e-3 J = 5e9 pJ
    ("energy=2uJ", "energy", 2e6),
    ("bits=4.5", "bits", 4.5),
])
def test_budget_units(text: str, metric: str, value: float) -> None:
    b = parse_budget(text)
    assert b.metric == metric
    assert b.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["size", "speed=3ms", "size=2XB", "latency=-1ms", "bits=abc",
                                  "size=0MB"])
def test_bad_budgets_name_the_flag(text: str) -> None:
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)


def test_format_round_trips_through_parse() -> None:
    for text in ("size=2.5MB", "latency=15ms", "energy=5mJ", "bits=4.5"):
        b = parse_budget(text)
        assert parse_budget(f"{b.metric}={format_value(b.metric, b.value)}").value == \
            pytest.approx(b.value, rel=1e-3)


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60.0), ("500ms", 0.5), ("2min", 120.0),
                                               ("90", 90.0), ("1.5e2us", 1.5e-4)])
def test_analysis_budget_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["60 sec", "-1s", "0s", "soon", "5h"])
def test_bad_durations_name_the_flag(text: str) -> None:
    with pytest.raises(UserError, match="--analysis-budget"):
        parse_duration(text)


@settings(max_examples=200, deadline=None)
@given(metric=st.sampled_from(("latency", "energy", "size", "bits")),
       value=st.floats(1e-9, 1e15, allow_nan=False))
def test_a_figure_rounded_up_is_a_budget_it_meets(metric: str, value: float) -> None:
    """`format_value(..., up=True)` names a budget that `value` meets, within one unit of its
    third significant digit (what an infeasible budget's message names)."""
    shown = parse_budget(f"{metric}={format_value(metric, value, up=True)}").value
    assert value <= shown <= value * (1 + 1e-2) * (1 + 1e-12)


def test_rounding_up_by_hand() -> None:
    assert format_value("latency", 7.651e-4, up=True) == "0.766ms"
    assert format_value("latency", 7.651e-4) == "0.765ms"
    assert format_value("size", 2.0e6, up=True) == "2MB"
    assert format_value("energy", 0.9999e9, up=True) == "1mJ"
