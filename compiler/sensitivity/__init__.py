"""Layer sensitivities for mixed-precision bit allocation.

Every method returns a `Sensitivity` whose `omega[l, b]` is the harm of giving quantisable
layer l the weight bits `bits[b]`; the exact allocator minimises the sum of omega under a
budget. Methods, called alike as `METHODS[name](g, calib_inputs, labels, bits=...)`:

- "hawq": HAWQ-V2, Hessian trace per parameter times the quantisation error (`hawq`);
- "lrp": the layer's relevance contribution times its relative quantisation error (`lrp`);
- "proxy": the quantisation error alone, data-free (`proxy.sensitivity`);
- "uniform": 4^-b for every layer, layer-agnostic: the allocator then spreads bits evenly,
  reproducing uniform-like choices (`proxy.uniform`).
"""

from collections.abc import Callable, Mapping
from types import MappingProxyType

from compiler.sensitivity import hawq, lrp, proxy
from compiler.sensitivity.proxy import (
    DEFAULT_BITS,
    Sensitivity,
    WeightGrid,
    quant_error,
    quantisable_layers,
    weight_grid,
)

METHODS: Mapping[str, Callable[..., Sensitivity]] = MappingProxyType({
    "hawq": hawq.sensitivity,
    "lrp": lrp.sensitivity,
    "proxy": proxy.sensitivity,
    "uniform": proxy.uniform,
})

__all__ = ["DEFAULT_BITS", "METHODS", "Sensitivity", "WeightGrid", "quant_error",
           "quantisable_layers", "weight_grid"]
