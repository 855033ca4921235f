"""Small language models on edge CPUs: decoder shapes, prefill/decode prediction, RAM fit.

`config` reads a weights-free Hugging Face-style `config.json`; `formats` says how many bytes a
weight takes in onnxruntime's runtime layout; `phases` predicts time to first token and decode
tokens/s per thread count over a context range; `fit` checks the footprint against board RAM.
"""

from edgesim.llm.config import DecoderConfig, load_config
from edgesim.llm.fit import Footprint, check_fit, footprint
from edgesim.llm.formats import WeightFormat, parse_format
from edgesim.llm.phases import LlmSimulation, simulate_llm

__all__ = ["DecoderConfig", "Footprint", "LlmSimulation", "WeightFormat", "check_fit",
           "footprint", "load_config", "parse_format", "simulate_llm"]
