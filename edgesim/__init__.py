"""edgesim: hardware-aware mixed-precision compilation and simulation for edge ONNX models.

The Python API mirrors the CLI: `compile`, `allocate`, `simulate`, `inspect`, `targets` here,
and every command's function (also `quantize`, `evaluate_model`, `probe_target`) in
`edgesim.api`. No submodule shares a name with these functions: importing a submodule binds it
as a package attribute, which would replace the function of that name (so the simulation
module is `edgesim.simulation`, not `edgesim.simulate`).
"""

from edgesim.api import allocate, compile, inspect, simulate, targets

__all__ = ["allocate", "compile", "inspect", "simulate", "targets"]
__version__ = "0.1.0"
