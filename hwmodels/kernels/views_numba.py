"""numba's version of `kernels.views.borrowed` (see there), registered on import."""

from __future__ import annotations

from typing import Any

from numba import types as nb_types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import carray

from hwmodels.kernels.views import borrowed


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


@overload(borrowed, inline="always")
def _borrowed_numba(arr: Any) -> Any:
    if isinstance(arr, nb_types.Array) and arr.layout == "C":
        return _view
    return _same


def _view(arr: Any) -> Any:  # annotated as the overload: numba compares the signatures
    return carray(_data_pointer(arr), arr.shape)


def _same(arr: Any) -> Any:
    return arr
