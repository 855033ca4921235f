"""ONNX -> IR: `load` validates and cleans a model and lowers it; `lower_model` lowers a
model that is already clean."""

from compiler.frontend.load import load
from compiler.frontend.lower import lower_model

__all__ = ["load", "lower_model"]
