"""One kernel source, two engines: plain Python, or numba-compiled on first demand.

A cost kernel is written once, as a plain function over numpy arrays and scalars, under
`@njit(cache=True)` imported from here (same spelling as numba's, so the formula modules read
as before). This `njit` imports nothing: it wraps the function in a `Kernel` that keeps the
source and numba's options. Each engine runs its own copy of a kernel module's functions,
made from the same code objects with another globals dict, in which every kernel a function
calls -- in its own module, imported by name, or through a module (`ncnn.tile_oc`) -- is that
engine's copy too:

- `python(fn)`: runs in the interpreter; `prange` is `range`. Nothing compiles, numba is not
  imported. Per layer-evaluation it is 8-33 us slower than compiled code, but a process that
  runs a few hundred evaluations (a `simulate`) saves numba's import and first-call set-up
  (0.6-0.8 CPU-s with a warm cache: `import numba` pulls scipy.linalg, and the first cached
  kernel loads numba's typing registries).
- `compiled(fn)`: `numba.njit(**options)` on the copy (numba resolves globals when it compiles,
  so callees bind as dispatchers of the same copies), with numba's on-disk cache: the copy has
  the original's code object, file, line and qualified name, so its cache files are the ones
  `kernels.cache_state` looks for; the cache is stamped with every project source
  (`compiler.numba_cache`), since numba inlines callees from other modules.

Calling a `Kernel` directly runs the compiled engine (what every caller got before). The cost
entry points (`hwmodels.cpu.run_kernel`, `hwmodels.macarray.run_kernel`, `hwmodels.mcu`) ask
`engine(work)` / `choose(fn, work)`: the Python engine for small work, numba from
`NUMBA_MIN_WORK` on (measured, below), or as forced by `EDGESIM_KERNELS=python|numba` or by
the caller (sweeps always compile: `hwmodels.sweep_hooks`). Both engines give bit-identical
results (no kernel uses fastmath; tests/hwmodels/test_kernel_engines.py). numba's first
compile of a cold module is logged on this module's logger (`COMPILE_MESSAGE`, INFO): the CLI
prints it once as its first-run notice.

Process state, deliberately: the two namespaces per kernel module (a dozen modules: bounded),
as numba's own dispatchers hold their compiled code, and `_RENTAL`, the Python work this
process has run so far (one number; see `engine`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import types
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

ENGINE_ENV = "EDGESIM_KERNELS"  # "python", "numba" or "auto" (the default)
ENGINES = ("auto", "python", "numba")
# layer-evaluations (layers x bit choices x designs) above which numba pays for itself. Its
# import, cached-kernel load and first call cost 0.63-0.77 CPU-s; a layer-evaluation in Python
# costs 31-33 us on the CPU kernel, 11-14 on the MAC array's, 8-10 on the MCU's (compiled:
# 0.3-1.0): break-even at 20-22 k evaluations on a CPU, 56-63 k on a MAC array, 83-100 k on an
# MCU (bench/bench_engines.py, resnet18 and mobilenet_v2, 2026-12-07, shared 2-core machine).
# One threshold, the CPU's: for the other kinds it switches early, at no more than ~0.3 s of
# Python. A simulate costs a few hundred evaluations (digits_cnn 100, resnet18 490,
# mobilenet_v2 1000).
NUMBA_MIN_WORK = 20_000
COMPILE_MESSAGE = "compiling cost kernels (first run only)..."

log = logging.getLogger(__name__)


class Kernel:
    """A kernel function and numba's options for it; calling it runs the compiled engine."""

    def __init__(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        self.__wrapped__, self.options = func, options
        self.__name__, self.__qualname__ = func.__name__, func.__qualname__
        self.__module__, self.__doc__ = func.__module__, func.__doc__
        # each engine's copy, looked up once (a cost call takes microseconds)
        self.engines: dict[bool, Callable[..., Any]] = {}

    def __call__(self, *args: Any) -> Any:
        return self.engine(True)(*args)

    def engine(self, numba: bool) -> Callable[..., Any]:
        """This kernel's copy in the compiled (`numba`) or the Python engine."""
        run = self.engines.get(numba)
        if run is None:
            run = self.engines[numba] = _engine_namespace(self.__module__, numba)[self.__name__]
        return run

    def __repr__(self) -> str:
        return f"<kernel {self.__module__}.{self.__qualname__}>"


def njit(**options: Any) -> Callable[[F], F]:
    """Record `fn` as a kernel with numba's `options` (compiled only when asked for)."""
    def wrap(fn: F) -> F:
        return cast(F, Kernel(fn, options))
    return wrap


def prange(*args: int) -> range:
    """numba's `prange` in compiled code; `range` in Python."""
    return range(*args)


def python(fn: F) -> F:
    """The Python engine's copy of kernel `fn`."""
    return cast(F, cast(Kernel, fn).engine(False))


def compiled(fn: F) -> F:
    """The numba dispatcher of kernel `fn` (imports numba and compiles or loads on first use)."""
    return cast(F, cast(Kernel, fn).engine(True))


def is_loaded(fn: Callable[..., Any]) -> bool:
    """Whether this process has already set up numba for `fn`'s module."""
    return cast(Kernel, fn).__module__ in _NUMBA_MODULES


_NUMBA_MODULES: set[str] = set()  # kernel modules whose numba namespace this process built


class _Rental:
    """Python work (layer-evaluations) this process has run in the Python engine."""

    work = 0


_RENTAL = _Rental()


def engine(work: int, forced: str | None = None) -> str:
    """"python" or "numba" for a kernel call of `work` layer-evaluations.

    `forced` (or `EDGESIM_KERNELS`) other than "auto" decides. Otherwise numba once this
    process has it loaded, or when this call plus the Python work run so far reaches
    `NUMBA_MIN_WORK` (renting until the rent paid equals the price of buying: a loop of
    small calls, an allocator's, switches to compiled code after a bounded loss).

    Raises:
        ValueError: an engine name not in `ENGINES`.
    """
    choice = forced or os.environ.get(ENGINE_ENV) or "auto"
    if choice not in ENGINES:
        raise ValueError(f"{ENGINE_ENV}={choice!r}: expected one of {', '.join(ENGINES)}")
    if choice != "auto":
        return choice
    if _NUMBA_MODULES or _RENTAL.work + work >= NUMBA_MIN_WORK:
        return "numba"
    _RENTAL.work += work
    return "python"


def choose(fn: F, work: int, forced: str | None = None) -> F:
    """Kernel `fn` in the engine `engine(work, forced)` picks."""
    return cast(F, cast(Kernel, fn).engine(engine(work, forced) == "numba"))


@functools.cache  # one entry per (kernel module, engine): bounded by the modules
def _engine_namespace(module: str, numba: bool) -> dict[str, Any]:
    """`module`'s globals, with every kernel replaced by this engine's copy."""
    if numba:
        _announce(module)
        from hwmodels.kernels import views_numba  # noqa: F401  # registers `borrowed` in numba
        _NUMBA_MODULES.add(module)
    namespace = dict(vars(sys.modules[module]))
    numba_jit = _numba_jit() if numba else None
    for name, value in list(namespace.items()):
        namespace[name] = _rebind(module, value, namespace, numba_jit, numba)
    return namespace


def rebind_own(modules: tuple[types.ModuleType, ...],
               wrap: Callable[[Callable[..., Any]], Any]) -> dict[str, Any]:
    """The first of `modules`' globals for numba, with the copies of every kernel defined in
    `modules` passed through `wrap` (e.g. an always-inlined njit) and bound to each other
    across them, and other modules' kernels compiled (for `kernels.macarray_batch`, which
    inlines the MAC-array model's modules)."""
    names = {m.__name__ for m in modules}
    spaces = {m.__name__: _engine_namespace(m.__name__, True).copy() for m in modules}
    wrapped = {(m.__name__, name): wrap(_copy(value, spaces[m.__name__]))
               for m in modules for name, value in vars(m).items()
               if isinstance(value, Kernel) and value.__module__ == m.__name__}
    for m in modules:  # imported kernels of the group bind to the group's wrapped copies
        for name, value in vars(m).items():
            if isinstance(value, Kernel) and value.__module__ in names:
                spaces[m.__name__][name] = wrapped[(value.__module__, value.__name__)]
    return spaces[modules[0].__name__]


def _rebind(module: str, value: Any, namespace: dict[str, Any],
            numba_jit: Callable[..., Any] | None, numba: bool) -> Any:
    if value is prange and numba:
        import numba as nb
        return nb.prange
    if isinstance(value, Kernel):
        if value.__module__ != module:
            return _engine_namespace(value.__module__, numba)[value.__name__]
        copy = _copy(value, namespace)
        return numba_jit(**value.options)(copy) if numba_jit else copy
    if isinstance(value, types.ModuleType) and _has_kernels(value):
        proxy = types.ModuleType(value.__name__)
        proxy.__dict__.update(_engine_namespace(value.__name__, numba))
        return proxy
    return value


def _copy(k: Kernel, namespace: dict[str, Any]) -> types.FunctionType:
    fn = cast(types.FunctionType, k.__wrapped__)
    copy = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    copy.__qualname__, copy.__doc__ = fn.__qualname__, fn.__doc__
    copy.__kwdefaults__, copy.__annotations__ = fn.__kwdefaults__, fn.__annotations__
    return copy


def _has_kernels(module: types.ModuleType) -> bool:
    return module.__name__.startswith("hwmodels.kernels.") and \
        any(isinstance(v, Kernel) for v in vars(module).values())


def _numba_jit() -> Callable[..., Any]:
    # numba's njit, with the cache stamped by the whole tree: a kernel inlines its callees in
    # other modules, whose edits numba's own stamp (the kernel's file only) misses
    from compiler.numba_cache import njit as numba_njit
    return numba_njit


def _announce(module: str) -> None:
    """Log `COMPILE_MESSAGE` when numba will compile `module` (its cache is cold)."""
    from hwmodels.kernels import cache_state

    name = module.rsplit(".", 1)[-1]  # the small kernels (MCU, SCALE-Sim) compile in seconds
    if name in cache_state.COST_KERNELS and cache_state.cold_modules(cache_state.KERNELS, (name,)):
        log.info(COMPILE_MESSAGE)
