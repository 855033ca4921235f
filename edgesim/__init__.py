"""edgesim: hardware-aware mixed-precision compilation and simulation for edge ONNX models."""

from edgesim.api import inspect

__all__ = ["inspect"]
__version__ = "0.1.0"
