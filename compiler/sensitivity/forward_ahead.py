"""The calibration chunks' forward passes and their observer, on worker threads.

A Gauss-Newton probing pass (`compiler.sensitivity.gauss_newton.traces`) runs, per chunk, a
forward pass (onnxruntime, or the reference executor), the caller's `observe` on it (compile's
calibration statistics: histograms of every activation) and then the numpy backward passes of
the probes; after an early stop the remaining chunks run forward and `observe` only. Those
three do not wait for one another across chunks, so each has its own thread: one worker runs
the forward pass of chunk i + 1 while another observes chunk i and the calling thread runs
chunk i's backward pass (numpy's GEMMs, onnxruntime and the window kernels release the GIL).
Each worker is one thread, so `observe` still sees the chunks once each, in order, and the
samples are the serial ones: the probes' random draws stay on the calling thread. A chunk's
forward pass starts once the chunk before is observed, so at most three chunks' tensors are
held at once (one being probed, one observed, the next being computed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar

import numpy as np

Observer = Callable[[Mapping[str, np.ndarray]], None]  # sees each chunk's forward tensors
# feeds -> every tensor of the float32 forward pass (as `executor.run(..., keep=True)` gives)
Forward = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
Env = Mapping[str, np.ndarray]
T = TypeVar("T")
# Most bytes of one chunk's tensors for which the workers run: compile's analysis peak RSS,
# workers against a plain loop, on the loaded 2-core host: mobilenet_v2 (49.6 MiB a sample)
# 365 -> 448 MiB, under its compile's 630 MiB peak; resnet18 (21.9 MiB) 546 -> 603 MiB
# (compile 770); PP-OCR (194 MiB) 530 -> 881 MiB, far above its compile's 680 MiB
AHEAD_BYTES = 64 * 2**20
# ... and least: below it a chunk's passes take about as long as handing them to a thread
# (silero, 0.1 MiB a sample, 16 chunks, load 2: 0.37-0.53 s with the workers, 0.31-0.53 s
# without; magika's 25.5 MiB gain 1.15 -> 1.00 s)
AHEAD_MIN_BYTES = 2**20


class ForwardAhead:
    """Each chunk's forward pass run one chunk ahead of the caller, and `observe` shown each
    chunk once, in order, the first time the caller takes it.

    The workers run only where the machine has a core to spare (`spare_core`): on a CPU busy
    with other processes a thread holding the GIL while descheduled stalls the others. And
    only for chunks of `AHEAD_MIN_BYTES` to `AHEAD_BYTES` of tensors (`chunk_bytes`): running
    ahead holds up to three chunks' tensors where a plain loop holds one, and tiny chunks
    gain nothing. Otherwise the chunks run on the calling thread, as a plain loop would.

    Use as a context manager: leaving it waits for `observe` to see every chunk taken (and
    re-raises its error), and drops the forward pass under way (a serial run would not have
    reached that chunk).
    """

    def __init__(self, run: Forward, chunks: Sequence[Mapping[str, np.ndarray]],
                 observe: Observer | None, chunk_bytes: float) -> None:
        self._run, self._chunks, self._observe = run, chunks, observe
        self._pools = ((ThreadPoolExecutor(1, thread_name_prefix="hawq-forward"),
                        ThreadPoolExecutor(1, thread_name_prefix="hawq-observe"))
                       if AHEAD_MIN_BYTES <= chunk_bytes <= AHEAD_BYTES and spare_core()
                       else None)
        self._jobs: dict[int, Future[Env]] = {}
        self._seen: list[Future[None]] = []  # observe's job per chunk, in chunk order
        self._observed = 0  # chunks shown to `observe`

    def __enter__(self) -> ForwardAhead:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._pools is None:
            return
        self._pools[0].shutdown(wait=True, cancel_futures=True)
        self._pools[1].shutdown(wait=True, cancel_futures=kind is not None)
        if kind is None:
            for job in self._seen:
                job.result()

    def env(self, i: int) -> Env:
        """Chunk `i`'s forward tensors; `observe` sees them (on its worker) if this is the
        first time chunk `i` is taken, and chunk `i + 1`'s forward pass starts."""
        if self._pools is None:
            env = self._run(self._chunks[i])
        else:
            job = self._jobs.pop(i, None) or self._start(i)
            if i + 1 < len(self._chunks) and i + 1 not in self._jobs:
                if self._seen:  # one chunk at most waits for `observe` (memory)
                    self._seen[-1].result()
                self._jobs[i + 1] = self._start(i + 1)
            env = job.result()
        self._show(i, env)
        return env

    def observe_rest(self) -> None:
        """The forward passes of the chunks not yet observed, for `observe` alone (none
        without it)."""
        if self._observe is not None:
            for i in range(self._observed, len(self._chunks)):
                self.env(i)

    def _show(self, i: int, env: Env) -> None:
        """`observe(env)` if chunk `i` is the next one it has to see."""
        if self._observe is None or i != self._observed:
            return
        self._observed += 1
        if self._pools is None:
            self._observe(env)
        else:
            self._seen.append(self._pools[1].submit(_serially, self._observe, env))

    def _start(self, i: int) -> Future[Env]:
        assert self._pools is not None
        return self._pools[0].submit(_serially, self._run, self._chunks[i])


def spare_core() -> bool:
    """Whether the machine has a core for the worker threads (1-minute load average)."""
    from compiler.clip_search import idle_core, search_threads  # numba loads with it

    return idle_core(search_threads())


def _serially(fn: Callable[[Env], T], env: Env) -> T:
    """`fn(env)` with the window kernels' loops on this thread alone (numba's thread count is
    per thread: `compiler.window_kernels.serial`)."""
    from compiler.window_kernels import serial

    with serial():
        return fn(env)
