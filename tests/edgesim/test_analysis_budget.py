"""The analysis time budget as `compile` applies it: a default bound, `--analysis-budget`
parsing (a duration, or none / 0 for no bound), and the bound reaching HAWQ's clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.sensitivity import hawq
from edgesim import cli
from edgesim.budget import DEFAULT_ANALYSIS_BUDGET_S, parse_analysis_budget
from edgesim.errors import UserError


@pytest.mark.parametrize(("text", "seconds"), [
    (None, DEFAULT_ANALYSIS_BUDGET_S), ("none", None), ("Off", None), ("0", None),
    ("0s", None), ("45s", 45.0), ("2min", 120.0), ("1500ms", 1.5)])
def test_analysis_budget_values(text: str | None, seconds: float | None) -> None:
    assert parse_analysis_budget(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", "5h", ""])
def test_bad_analysis_budgets_name_the_flag(text: str) -> None:
    with pytest.raises(UserError, match="--analysis-budget"):
        parse_analysis_budget(text)


class _Reached(Exception):
    """Raised where HAWQ starts its clock: the budget got there; the rest is not needed."""


def _recorded_starts(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The budget seconds each HAWQ analysis starts its clock with (it stops right there)."""
    seen: list[float | None] = []

    def start(seconds: float | None, clock: object) -> None:
        seen.append(seconds)
        raise _Reached
    monkeypatch.setattr(hawq, "start", start)
    return seen


def _budget_reaching_hawq(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> float | None:
    """The budget seconds `edgesim compile argv` hands to HAWQ's clock."""
    seen = _recorded_starts(monkeypatch)
    args = cli.parse_args(["compile", "zoo:digits_cnn", "--calib-random", "4", "--quiet",
                           "--method", "hawq", *argv])
    with pytest.raises(_Reached):
        args.run(args)
    (seconds,) = seen
    return seconds


@pytest.mark.parametrize(("flags", "seconds"), [
    ([], DEFAULT_ANALYSIS_BUDGET_S), (["--analysis-budget", "none"], None),
    (["--analysis-budget", "0"], None), (["--analysis-budget", "12s"], 12.0)])
def test_compile_hands_the_budget_to_hawq(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          flags: list[str], seconds: float | None) -> None:
    """Without the flag, compile bounds the analysis by the default; none / 0 lift it."""
    got = _budget_reaching_hawq(monkeypatch, [*flags, "-o", str(tmp_path / "o")])
    assert got == seconds


def test_api_compile_defaults_to_the_bound(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    import edgesim

    seen = _recorded_starts(monkeypatch)
    with pytest.raises(_Reached):
        edgesim.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", calib_random=4,
                        method="hawq", quiet=True)
    assert seen == [DEFAULT_ANALYSIS_BUDGET_S] and DEFAULT_ANALYSIS_BUDGET_S > 0
