"""The sweep's batched MAC-array kernel inlines every MAC-array kernel it reaches, across the
modules the model is split into (`kernels.macarray`, `_folds`, `_traffic`): a call that is not
inlined passes its arrays with reference counts (`kernels.macarray_batch`'s docstring)."""

from __future__ import annotations

from typing import Any

from numba import njit

from hwmodels.kernels import jit, macarray_batch
from hwmodels.kernels import macarray as kernel

MODEL = "hwmodels.kernels.macarray"  # the model's modules share this prefix


def reached(entry: Any) -> dict[str, Any]:
    """Every MAC-array kernel dispatcher the Python code of `entry` calls, directly or through
    the kernels it calls, by qualified name (read from the globals each copy resolves in)."""
    seen: dict[str, Any] = {}
    todo = [entry]
    while todo:
        fn = todo.pop().py_func
        for name in fn.__code__.co_names:
            value = fn.__globals__.get(name)
            module = getattr(getattr(value, "py_func", None), "__module__", "")
            key = f"{module}.{name}"
            if module.startswith(MODEL) and key not in seen:
                seen[key] = value
                todo.append(value)
    return seen


def not_inlined(namespace: dict[str, Any]) -> list[str]:
    kernels = {**reached(namespace["layer_setup"]), **reached(namespace["layer_at"])}
    return sorted(k for k, d in kernels.items() if d.targetoptions.get("inline") != "always")


def test_the_batch_kernel_inlines_the_whole_model() -> None:
    kernels = {**reached(macarray_batch.layer_setup), **reached(macarray_batch.layer_at)}
    modules = {k.rsplit(".", 1)[0] for k in kernels}
    assert modules == {MODEL, f"{MODEL}_folds", f"{MODEL}_traffic"}
    assert "hwmodels.kernels.macarray_folds.tile_classes" in kernels  # through gemm_geometry
    assert not_inlined(macarray_batch._INLINED) == []


def test_the_check_sees_a_module_left_out_of_the_group() -> None:
    alone = jit.rebind_own((kernel,), njit(inline="always"))  # folds and traffic compiled apart
    missed = not_inlined(alone)
    assert "hwmodels.kernels.macarray_folds.streamed" in missed
    assert "hwmodels.kernels.macarray_traffic.gemm_memory" in missed
