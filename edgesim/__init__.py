"""edgesim: hardware-aware mixed-precision compilation and simulation for edge ONNX models.

The Python API mirrors the CLI: `compile`, `allocate`, `simulate`, `inspect`, `targets` here,
and every command's function (also `quantize`, `evaluate_model`, `probe_target`) in
`edgesim.api`. No submodule shares a name with these functions: importing a submodule binds it
as a package attribute, which would replace the function of that name (so the simulation
module is `edgesim.simulation`, not `edgesim.simulate`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["allocate", "compile", "inspect", "simulate", "targets"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`edgesim.simulate` etc. import `edgesim.api` on first use (PEP 562): the CLI and the
    sweep workers import this package without paying for the API's imports."""
    if name in __all__:
        from edgesim import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgesim' has no attribute {name!r}")
