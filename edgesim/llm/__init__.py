"""Small language models on edge CPUs: decoder shapes, prefill/decode prediction, RAM fit.

`config` reads a weights-free Hugging Face-style `config.json`; `formats` says how many bytes a
weight takes in onnxruntime's runtime layout; `phases` predicts time to first token and decode
tokens/s per thread count over a context range; `fit` checks the footprint against board RAM.
"""

from __future__ import annotations

from typing import Any

# name -> submodule; imported on first use (PEP 562), so the CLI's parser, which imports
# `edgesim.llm.cli`, does not pay for the cost models behind `fit` and `phases`
_HOMES = {"DecoderConfig": "config", "load_config": "config", "Footprint": "fit",
          "check_fit": "fit", "footprint": "fit", "WeightFormat": "formats",
          "parse_format": "formats", "LlmSimulation": "phases", "simulate_llm": "phases"}

# the trained zoo decoders `edgesim compile` takes by name (a light constant here: the CLI asks
# it of every compile, and edgesim.llm.compile imports the sensitivity machinery)
TRAINED = ("tiny_lm",)

__all__ = ["TRAINED", "DecoderConfig", "Footprint", "LlmSimulation", "WeightFormat", "check_fit",
           "footprint", "load_config", "parse_format", "simulate_llm"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'edgesim.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"edgesim.llm.{_HOMES[name]}"), name)
