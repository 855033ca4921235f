"""numba's on-disk cache, stamped with the whole project's sources (not only the kernel's file).

numba's cache (`cache=True`) reuses a kernel's machine code while the kernel's OWN source file
is unchanged. numba compiles the njit functions a kernel calls into the kernel's machine code,
so a kernel that calls a helper in another module (cpu_gemm's kernels call cpu_ncnn's) kept
the old helper after that module was edited: tests/hwmodels/test_cpu_ncnn.py failed until the
cache files were deleted, and a `git pull` would give silently wrong numbers.

Here every cached function whose file is under `SOURCE_DIRS` is stamped with its own file's
stamp (numba's) plus a digest of (path, mtime, size) of every .py under `SOURCE_DIRS`, taken
once per process: editing any project source recompiles every project kernel once. Other
files' functions keep numba's own locators. `njit` is numba's, after `register()` has put the
locators in front of numba's (the locator is chosen when a cached dispatcher is made: at
decoration), so compiler modules import `njit` from here and `hwmodels.kernels.jit` compiles
with it. Importing this module does not import numba (`hwmodels.kernels.cache_state` reads
`newest_source` without it).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("compiler", "hwmodels")  # the packages whose njit functions call each other


@functools.cache  # once per process: a source edited while it runs is seen by the next one
def _sources() -> tuple[tuple[str, int, int], ...]:
    found = []
    for top in SOURCE_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            st = path.stat()
            found.append((str(path.relative_to(ROOT)), st.st_mtime_ns, st.st_size))
    return tuple(found)


@functools.cache
def tree_digest() -> bytes:
    """sha256 of (path, mtime, size) of every .py under `SOURCE_DIRS`, as this process saw them."""
    return hashlib.sha256(repr(_sources()).encode()).digest()


def newest_source() -> float:
    """The newest mtime (seconds) of the .py files under `SOURCE_DIRS`."""
    return max(mtime for _, mtime, _ in _sources()) / 1e9


def _in_project(py_file: str) -> bool:
    path = Path(py_file).resolve()
    return any(path.is_relative_to(ROOT / top) for top in SOURCE_DIRS)


def _caching_class(caching: Any, name: str) -> Any:
    """numba.core.caching's `name` (older numbas spell these classes with a leading underscore)."""
    return getattr(caching, name, None) or getattr(caching, f"_{name}")


@functools.cache  # the classes subclass numba's: made on first use, so importing is numba-free
def _locators() -> tuple[Any, ...]:
    from numba.core import caching

    provided: Any = _caching_class(caching, "UserProvidedCacheLocator")
    in_tree: Any = _caching_class(caching, "InTreeCacheLocator")
    user_wide: Any = _caching_class(caching, "UserWideCacheLocator")

    class TreeStamp:
        """Mixin: numba's stamp of the function's file, plus the project tree's digest; only
        for functions defined under `SOURCE_DIRS`."""

        def get_source_stamp(self) -> Any:
            return (super().get_source_stamp(), tree_digest())  # type: ignore[misc]

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if not _in_project(py_file):
                return None
            return super().from_function(py_func, py_file)  # type: ignore[misc]

    class TreeUserProvided(TreeStamp, provided):  # type: ignore[misc]  # numba class at run time
        """In NUMBA_CACHE_DIR, when it is set (numba's own first choice)."""

    class TreeInTree(TreeStamp, in_tree):  # type: ignore[misc]
        """In the source's __pycache__, as numba's default."""

    class TreeUserWide(TreeStamp, user_wide):  # type: ignore[misc]
        """In numba's user-wide cache directory, when the tree is read-only."""

    return TreeUserProvided, TreeInTree, TreeUserWide


def register() -> None:
    """Put the project locators in front of numba's, in numba's order of preference (once per
    process; later calls do nothing)."""
    from numba.core import caching

    classes: list[Any] = _caching_class(caching, "CacheImpl")._locator_classes
    ours = _locators()
    if ours[0] not in classes:
        classes[:0] = ours


def njit(*args: Any, **options: Any) -> Callable[..., Any]:
    """`numba.njit`, with the project locators registered first."""
    import numba

    register()
    return numba.njit(*args, **options)
