"""The fuzz runner: run one generated input under a time limit and classify what it did as `ok`,
`project_error` (ModelError, TargetError, UserError: the one-line errors the CLI prints),
`foreign` (anything else: a bug) or `slow`."""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compiler.errors import ModelError
from edgesim.errors import UserError
from hwmodels.target import TargetError

PROJECT_ERRORS = (ModelError, TargetError, UserError)
Call = Callable[[], object]


@dataclass(frozen=True)
class Outcome:
    """What one input did: `kind` is ok / project_error / foreign / slow."""

    family: str
    kind: str
    seconds: float
    detail: str = ""


class _Slow(BaseException):
    """Raised by the alarm of `run_one` (a BaseException: no `except Exception` swallows it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Slow


def run_one(family: str, call: Call, limit_s: float) -> Outcome:
    """Run `call`, classify its outcome; stop it after `limit_s` (SIGALRM) as `slow`."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    start = time.perf_counter()
    try:
        call()
        kind, detail = "ok", ""
    except _Slow:
        kind, detail = "slow", ""
    except PROJECT_ERRORS as e:
        kind, detail = "project_error", str(e)[:200]
    except Exception as e:  # noqa: BLE001 - the point: anything else is a bug
        tb = traceback.extract_tb(e.__traceback__)[-1]
        kind, detail = "foreign", f"{type(e).__name__}: {str(e)[:160]} @ {tb.filename}:{tb.lineno}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - start
    # over the limit is slow whatever came out (code that swallowed the alarm included)
    return Outcome(family, "slow" if seconds > limit_s else kind, seconds, detail)
