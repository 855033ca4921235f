"""edgesim: hardware-aware mixed-precision compilation and simulation for edge ONNX models.

The Python API mirrors the CLI: `inspect`, `simulate`, `allocate`, `compile`, `targets`.
"""

from edgesim.api import allocate, compile, inspect, simulate, targets

__all__ = ["allocate", "compile", "inspect", "simulate", "targets"]
__version__ = "0.1.0"
