"""Array views that numba does not reference-count, for kernels' innermost loops.

numba counts every binding of an array to a variable, including each argument of a call it
inlines, with an atomic increment and decrement of the array's owner (`NRT_incref`,
`NRT_decref`). In the MAC-array kernels, whose per-layer functions take a dozen arrays each,
those atomics took a third of the CPU time (perf). A `borrowed` view has no owner, so binding
it costs nothing; it is valid only while its caller holds the array it points into, and must
not be returned or stored beyond that call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import types as nb_types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import carray


def _data_pointer_typing(typingctx: Any, arr: Any) -> Any:
    """The address of `arr`'s first element, typed (what `numba.carray` takes); C-contiguous
    arrays only (a strided array would be misread as contiguous: a typing error instead)."""
    if not isinstance(arr, nb_types.Array) or arr.layout != "C":
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return context.make_array(signature.args[0])(context, builder, args[0]).data
    pointer: Any = nb_types.CPointer(arr.dtype)  # type: ignore[no-untyped-call]
    return pointer(arr), codegen


_data_pointer: Any = intrinsic(_data_pointer_typing)


def borrowed(arr: np.ndarray) -> np.ndarray:
    """A view of `arr` without an owner, so binding it counts no references; valid only
    while the caller holds `arr` (module docstring). Only C-contiguous arrays have such a
    view; others come back as they are (counted, still correct). Callable in numba only."""
    raise TypeError("borrowed is called from numba-compiled code only")


@overload(borrowed, inline="always")
def _borrowed_numba(arr: Any) -> Any:
    if isinstance(arr, nb_types.Array) and arr.layout == "C":
        return _view
    return _same


def _view(arr: Any) -> Any:  # annotated as the overload: numba compares the signatures
    return carray(_data_pointer(arr), arr.shape)


def _same(arr: Any) -> Any:
    return arr
