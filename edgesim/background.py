"""Work on a helper thread that overlaps the compile's onnxruntime phases.

The report's figures need only the allocation (pareto.png) or the quantised layers
(layers.png), while the phases that follow them spend their time in onnxruntime with the
GIL released; drawing on a helper thread meanwhile takes the figures off the critical path.
`jobs()` waits for every job it started before its block is left, also on an error, so
nothing writes into a staging folder after it has been removed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol


class _Joinable(Protocol):
    def join(self) -> None: ...


class Job:
    """`fn(*args)` on a helper thread, after the `after` threads or jobs have finished (their
    errors are theirs to report); `result()` waits for it and returns its value or raises
    its error in the caller's thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any,
                 after: Sequence[_Joinable] = ()) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, tuple(after)),
                                        name=f"edgesim-{getattr(fn, '__name__', 'job')}",
                                        daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...],
             after: tuple[_Joinable, ...]) -> None:
        try:
            for earlier in after:
                earlier.join()
            self._value = fn(*args)
        except BaseException as e:  # noqa: BLE001 -- raised again by `result` in the caller
            self._error = e

    def join(self) -> None:
        """Wait for the job without raising its error."""
        self._thread.join()

    def result(self) -> Any:
        """The job's return value, once it has finished.

        Raises:
            BaseException: whatever the job raised.
        """
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


class Jobs:
    """The jobs started inside one `jobs()` block."""

    def __init__(self) -> None:
        self._started: list[Job] = []

    def start(self, fn: Callable[..., Any], *args: Any, after: Sequence[_Joinable] = ()
              ) -> Job:
        """Start `fn(*args)` on a helper thread (see `Job`)."""
        job = Job(fn, *args, after=after)
        self._started.append(job)
        return job

    def wait(self) -> None:
        """Wait for every started job, without raising their errors."""
        for job in self._started:
            job.join()


@contextmanager
def jobs() -> Iterator[Jobs]:
    """A `Jobs` whose jobs have all finished when the block is left (normally or by an
    error); errors surface only where the block asks a job for its `result()`."""
    started = Jobs()
    try:
        yield started
    finally:
        started.wait()
