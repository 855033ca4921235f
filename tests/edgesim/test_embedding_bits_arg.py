"""`embedding_bits` is bits, None or "auto": another string is the user's error (found by mypy,
issue 19: it used to reach the quantize pass as a string of "bits")."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesim.errors import UserError
from edgesim.quantize import quantize_model


def test_a_string_other_than_auto_is_rejected(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with pytest.raises(UserError, match="^--embedding-bits: must be bits or 'auto', got '8'$"):
        quantize_model("zoo:digits_cnn", "fp32", out=out, embedding_bits="8")
    assert not out.exists()
