"""ONNX -> IR: `load` validates and cleans a model, `lower_model` lowers a cleaned one."""

from compiler.frontend.lower import lower_model

__all__ = ["lower_model"]
