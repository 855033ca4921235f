"""`hwmodels.kernels.views.borrowed`: an owner-less view reads and writes the array's own
memory (C-contiguous), and other layouts come back as they are, with the same values."""

from __future__ import annotations

import numpy as np
from numba import njit

from hwmodels.kernels import views_numba  # noqa: F401 - registers `borrowed` in numba
from hwmodels.kernels.views import borrowed


@njit(cache=False)
def _write_through(arr: np.ndarray, value: float) -> float:
    view = borrowed(arr)
    view[1] = value
    return view.sum()


def test_borrowed_view_is_the_arrays_memory() -> None:
    arr = np.arange(6.0)
    total = _write_through(arr, 10.0)
    assert arr[1] == 10.0  # written through the view
    assert total == 0 + 10 + 2 + 3 + 4 + 5


def test_borrowed_rows_of_a_2d_array() -> None:
    arr = np.arange(12.0).reshape(3, 4)
    total = _write_through(arr[2], -1.0)  # a C-contiguous row view
    assert arr[2, 1] == -1.0
    assert total == 8 - 1 + 10 + 11


def test_strided_arrays_come_back_unchanged() -> None:
    base = np.arange(10.0)
    total = _write_through(base[::2], 7.0)  # elements 0, 2, 4, 6, 8; the second becomes 7
    assert base[2] == 7.0 and base[1] == 1.0  # the strided element, not its neighbour
    assert total == 0 + 7 + 4 + 6 + 8
