"""Phase progress on stderr (never on stdout, which `--json` owns); silent when quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Progress:
    """Prints `[i/n] phase ... done in 1.2 s` lines for the phases of a long command."""

    total: int
    quiet: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase and report its start and end."""
        self.done += 1
        self._say(f"[{self.done}/{self.total}] {name} ...")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        self._say(f"[{self.done}/{self.total}] {name}: done in {self.timings[name]:.1f} s")

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.stream, flush=True)
