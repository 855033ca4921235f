"""Progress on stderr (never on stdout, which `--json` owns); silent when quiet.

On a terminal, long phases show a live tqdm bar (elapsed time ticking, so a 50 s analysis or
the first run's numba compilation does not look hung); elsewhere (logs, pipes, tests) plain
`[i/n] phase ...` lines. tqdm is imported only for a terminal, and if it is missing the lines
are used there too.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

TICK_S = 0.5  # how often a terminal bar's clock is redrawn during a phase


def _bar(stream: TextIO, **kwargs: Any) -> Any:
    """A tqdm bar on `stream` if it is a terminal and tqdm is installed, else None."""
    if not getattr(stream, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # shutil falls back to 80x24 where the terminal reports 0x0 (tqdm would draw nothing)
    size = shutil.get_terminal_size()
    return tqdm(file=stream, ncols=size.columns, nrows=size.lines, leave=True, **kwargs)


@dataclass
class Progress:
    """Reports the phases of a long command: a bar on a terminal, `[i/n]` lines elsewhere."""

    total: int
    quiet: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase and report its start and end."""
        self.done += 1
        # phases have no inner steps: show which one runs and its clock, not a rate or ETA
        bar = None if self.quiet else _bar(
            self.stream, total=self.total, initial=self.done, desc=name,
            bar_format="[{n_fmt}/{total_fmt}] {desc} ... {elapsed}")
        if bar is None:
            self._say(f"[{self.done}/{self.total}] {name} ...")
        start = time.perf_counter()
        with _ticking(bar):
            yield
        self.timings[name] = time.perf_counter() - start
        if bar is not None:
            bar.set_description_str(f"{name}: done")
            bar.close()
        else:
            self._say(f"[{self.done}/{self.total}] {name}: done in {self.timings[name]:.1f} s")

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(line, file=self.stream, flush=True)


@contextmanager
def _ticking(bar: Any) -> Iterator[None]:
    """Redraw `bar` every TICK_S seconds from a helper thread while the body runs."""
    if bar is None:
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=_tick, args=(bar, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _tick(bar: Any, stop: threading.Event) -> None:
    while not stop.wait(TICK_S):
        bar.refresh()


def points_line(done: int, total: int, elapsed_s: float) -> str:
    """`sweep: 250/1000 points, 125 points/s, ETA 6 s`."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("inf")
    return f"sweep: {done}/{total} points, {rate:,.0f} points/s, ETA {eta:,.0f} s"


class PointsBar:
    """Sweep progress, `(done, total, elapsed_s)` per stored batch: a tqdm bar (rate, ETA)
    on a terminal, one line per batch elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.tried = False

    def __call__(self, done: int, total: int, elapsed_s: float) -> None:
        if not self.tried:
            self.tried = True
            self.bar = _bar(self.stream, total=total, desc="sweep", unit="point")
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.bar.close()
            return
        print(points_line(done, total, elapsed_s), file=self.stream, flush=True)
