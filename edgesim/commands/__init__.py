"""The built-in subcommands of `edgesim`, one module per command family: for each command,
`cmd_NAME(args) -> exit code` (a thin layer over one `edgesim.api` function, printing its
result or its JSON) and `add_NAME(sub)`, which registers its parser through
`edgesim.cli.add_command`."""

from __future__ import annotations

from edgesim.commands.compile import add_compile
from edgesim.commands.hardware import add_targets, add_validate
from edgesim.commands.models import add_evaluate, add_inspect, add_quantize, add_simulate
from edgesim.commands.sweeps import add_pareto, add_sweep

# in `edgesim --help`'s order
BUILTIN = (add_inspect, add_simulate, add_compile, add_evaluate, add_quantize, add_sweep,
           add_pareto, add_targets, add_validate)
