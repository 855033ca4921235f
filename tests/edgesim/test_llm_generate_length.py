"""`edgesim generate` past the decoder's positions is bad input: one line, exit 2. Oracle: the
zoo's tiny_lm is built with 512 rotary positions (edgesim/zoo/trained.py TINY_LM_SHAPE, and
onnxruntime's own refusal of index 512): a 1-byte prompt is position 0 and the i-th new token
is fed back at position i, so 512 new tokens end at 511 and 513 reach 512."""

from __future__ import annotations

import pytest

from edgesim.cli import main


def test_generating_past_the_models_positions_is_one_line_exit_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "zoo:tiny_lm", "--prompt", "x", "--max-new-tokens", "513"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "512" in err


def test_the_last_position_still_generates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "zoo:tiny_lm", "--prompt", "x", "--max-new-tokens", "512"]) == 0
