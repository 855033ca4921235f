"""openWakeWord's melspectrogram.onnx quantised inside its fp32 wake-word chain (see `oww`)."""

from __future__ import annotations

from pathlib import Path

from real_models import RealModel, oww


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 16 spoken clips calibrate, `n_eval` others evaluate."""
    return oww.case(0, cache, n_eval)
