"""Array views that numba does not reference-count, for kernels' innermost loops.

numba counts every binding of an array to a variable, including each argument of a call it
inlines, with an atomic increment and decrement of the array's owner (`NRT_incref`,
`NRT_decref`). In the MAC-array kernels, whose per-layer functions take a dozen arrays each,
those atomics took a third of the CPU time (perf). A `borrowed` view has no owner, so binding
it costs nothing; it is valid only while its caller holds the array it points into, and must
not be returned or stored beyond that call.

In the Python engine (`kernels.jit`) `borrowed` is the array itself; its numba version is
registered by `kernels.views_numba`, which `kernels.jit` imports before it compiles anything
(so this module imports no numba).
"""

from __future__ import annotations

import numpy as np


def borrowed(arr: np.ndarray) -> np.ndarray:
    """A view of `arr` without an owner, so binding it counts no references; valid only
    while the caller holds `arr` (module docstring). In compiled code only C-contiguous arrays
    have such a view; others come back as they are (counted, still correct). In Python: `arr`."""
    return arr
