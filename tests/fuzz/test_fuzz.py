"""Fast fuzz tier: seeded hostile inputs of every family (ONNX bytes and protos, target YAML,
sweep spaces, calibration npz, assignment files) raise only the project's own errors
(ModelError, TargetError, UserError), and none runs away. `bench/bench_fuzz.py` is the long
tier (>= 10,000 inputs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.fuzz.families import FAMILIES, fuzz
from tests.fuzz.runner import run_one

COUNT = {"onnx_bytes": 40, "onnx_proto": 60, "target_yaml": 15, "sweep_space": 15,
         "calib_npz": 40, "assignment": 30, "cli_flags": 40}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_only_project_errors_come_out(family: str, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf/nan data is allowed to overflow
        outcomes = fuzz(family, seed=1, count=COUNT[family], work=tmp_path, limit_s=10.0)
    foreign = [o.detail for o in outcomes if o.kind == "foreign"]
    assert not foreign, foreign
    assert not [o for o in outcomes if o.kind == "slow"]
    # the generators are hostile: most inputs must be refused, with a one-line error
    refused = [o for o in outcomes if o.kind == "project_error"]
    assert len(refused) >= len(outcomes) // 2
    assert all("\n" not in o.detail for o in refused)


def test_the_runner_tells_bugs_from_user_errors() -> None:
    """The classifier itself: a foreign exception is reported as one, a UserError is not."""
    from edgesim.errors import UserError

    def bug() -> None:
        raise IndexError("oops")

    def refused() -> None:
        raise UserError("--x", "bad")

    assert run_one("t", bug, 5.0).kind == "foreign"
    assert run_one("t", refused, 5.0).kind == "project_error"
    assert run_one("t", lambda: None, 5.0).kind == "ok"
