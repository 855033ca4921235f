"""Hardware cost models: targets (YAML -> typed objects) and cycle/energy models over layers.

`evaluate(table, bits, target)` is the entry point; see `hwmodels.cost`.
"""

from hwmodels.cost import Cost, evaluate

__all__ = ["Cost", "evaluate"]
