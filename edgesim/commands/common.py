"""What several command families share: the model argument, the flags that read it
(`--input-value`, `--batch-axis`), the kernel-check flag and the count format of the printed
tables."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from edgesim.errors import UserError


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


def add_reading_args(p: argparse.ArgumentParser) -> None:
    """`--input-value NAME=VALUE` and `--batch-axis NAME=AXIS` (compile and quantize)."""
    p.add_argument("--input-value", action="append", metavar="NAME=VALUE",
                   help="pin an input to a constant (If nodes on it are inlined), e.g. sr=16000")
    p.add_argument("--batch-axis", action="append", metavar="NAME=AXIS",
                   help="axis of an input that holds samples, e.g. state=1 (or state=none)")


def reading_options(args: argparse.Namespace
                    ) -> tuple[dict[str, float | int], dict[str, int | None]]:
    """`add_reading_args`' flags as the API's `input_values` and `batch_axes`."""
    axes = parse_named(args.batch_axis, "--batch-axis", "name=1 (or name=none)", _axis)
    return (parse_named(args.input_value, "--input-value", "name=16000", _number),
            {k: None if v == "none" else v for k, v in axes.items()})


def parse_named(items: Sequence[str] | None, flag: str, example: str,
                convert: Callable[[str], Any]) -> dict[str, Any]:
    """Parse repeated `--flag name=value` flags, `convert` turning each value text into a
    value (ValueError: a bad value)."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        try:
            value = convert(text) if sep and name else None
        except ValueError:
            value = None
        if value is None:
            raise UserError(flag, f"expected {example}, got {item!r}")
        out[name] = value
    return out


def _number(text: str) -> float | int:
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _axis(text: str) -> int | str:
    return "none" if text.lower() == "none" else int(text)
