"""Whether a target can describe the machine `edgesim validate` runs on: measurements here
say nothing about a target of another kind or architecture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def host_mismatch(target: Any, arch: str, isa: Sequence[str], cores: int
                  ) -> tuple[str, str]:
    """(refusal, warning) for validating on a machine of `arch` with ISA features `isa` and
    `cores` cores against `target`; "" where none. Measurements here say nothing about a
    target of another kind or architecture (rpi5's predictions against an x86 host's times),
    so those are refused; a target of this architecture that claims ISA features or cores
    this machine lacks (a Pi 5 file on a Pi 4) is compared with a warning."""
    from hwmodels.kinds import capabilities

    name = getattr(target, "name", str(target))
    fix = "describe this machine with `edgesim target probe host.yaml` and pass --target host.yaml"
    if "onnxruntime" not in capabilities(target).runtimes:  # a device running its own program
        return (f"{name} is a {target.kind} target, not a CPU running onnxruntime like this "
                f"machine: {fix}"), ""
    if target.arch != arch:
        return f"{name} is an {target.arch} target and this machine is {arch}: {fix}", ""
    missing = [f for f in target.isa if f not in isa]
    differs = ([f"ISA features this machine lacks ({', '.join(missing)})"] if missing else []
               ) + ([f"{target.cores} cores (this machine has {cores})"] if target.cores > cores
                    else [])
    return "", (f"{name} claims {' and '.join(differs)}: its predictions are compared with "
                f"this machine's times" if differs else "")


def check_host(target: Any) -> str:
    """`host_mismatch` against this machine: raises `UserError` on a refusal, returns the
    warning ("" when the target could describe this machine)."""
    import os

    from edgesim.errors import UserError
    from hwmodels.probe import host_arch, isa_features, read_cpuinfo

    refusal, warning = host_mismatch(target, host_arch(), isa_features(read_cpuinfo()),
                                     len(os.sched_getaffinity(0)))
    if refusal:
        raise UserError("--target", refusal)
    return warning
