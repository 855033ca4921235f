"""What several command families share: the model argument, the kernel-check flag and the
count format of the printed tables."""

from __future__ import annotations

import argparse


def format_count(n: float) -> str:
    """`n` with a G/M/k suffix and two decimals (a count of MACs, parameters or bytes)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The positional model (ONNX file or zoo:NAME) and `--input-shape`."""
    p.add_argument("model", help="ONNX file or zoo:NAME")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224",
                   help="static shape for an input with dynamic dims (repeatable)")


def add_kernel_check(p: argparse.ArgumentParser, default: str) -> None:
    """`--kernel-check fail|report|off`, defaulting to `default`."""
    p.add_argument("--kernel-check", default=default, choices=("fail", "report", "off"),
                   help="compare each layer's kernel in onnxruntime's optimised graph with "
                        f"the plan: fail on a mismatch, report it, or skip (default {default})")
