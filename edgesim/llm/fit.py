"""Does a decoder fit in the board's RAM? Footprint by part against RAM minus the OS's share."""

from __future__ import annotations

from dataclasses import dataclass

from edgesim.errors import UserError
from edgesim.llm.config import DecoderConfig
from edgesim.llm.formats import parse_format
from edgesim.llm.traffic import kv_bytes_per_position, prefill_activation_bytes, weight_bytes
from hwmodels.cpu import CpuTarget

GIB = float(2**30)
# assumed: onnxruntime's shared library, its arenas and the Python process (~100 MiB resident
# for a CPU session in our measurements of the emitted decoders here)
RUNTIME_BYTES = 100 * 2**20


@dataclass(frozen=True)
class Footprint:
    """Resident bytes of a decoder while it runs, by part."""

    weights: float
    kv_cache: float
    activations: float
    runtime: float
    context: int

    def total(self) -> float:
        """All resident bytes."""
        return self.weights + self.kv_cache + self.activations + self.runtime

    def parts_gib(self) -> dict[str, float]:
        """Each part in GiB."""
        return {"weights": self.weights / GIB, "kv_cache": self.kv_cache / GIB,
                "activations": self.activations / GIB, "runtime": self.runtime / GIB}


def footprint(cfg: DecoderConfig, fmt: str, context: int, prompt_len: int,
              kv_dtype: str = "fp32", head_format: str | None = None) -> Footprint:
    """Resident bytes with weights in `fmt`, the KV cache at `context` tokens and the peak
    activations of a `prompt_len` prefill."""
    f = parse_format(fmt)
    w = weight_bytes(cfg, f, parse_format(head_format) if head_format else f)
    return Footprint(w.total(), kv_bytes_per_position(cfg, kv_dtype) * context,
                     prefill_activation_bytes(cfg, prompt_len), float(RUNTIME_BYTES), context)


def available_gib(target: CpuTarget, ram_gib: float | None) -> tuple[float, float]:
    """(board RAM, RAM free for the model) in GiB; `ram_gib` picks a variant (default: the
    largest the target lists; any size when it lists none).

    Raises:
        UserError: neither the target nor `ram_gib` gives a RAM size, or `ram_gib` is not one of
            the target's variants.
    """
    options = target.ram_options_gib
    if not options and ram_gib is None:
        raise UserError(f"target {target.name}", "lists no RAM sizes (ram_options_gib); give "
                        "--ram to check the fit")
    ram = float(ram_gib) if ram_gib is not None else max(options or ())  # options: checked
    if options and ram not in options:
        raise UserError(f"--ram {ram:g}", f"{target.name} comes with {list(options)} GiB")
    return ram, ram - (target.ram_reserved_gib or 0.0)


def check_fit(fp: Footprint, model: str, target: CpuTarget, ram_gib: float | None) -> str:
    """One line saying by how much the model fits.

    Raises:
        UserError: it does not fit; the message names the RAM, the need by part and the overflow.
    """
    ram, free = available_gib(target, ram_gib)
    need = fp.total() / GIB
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in fp.parts_gib().items())
    where = f"{model} on {target.name} with {ram:g} GiB RAM"
    if need > free:
        raise UserError(where, f"does not fit: needs {need:.2f} GiB ({parts}; KV cache at "
                        f"{fp.context} tokens) but {free:.2f} GiB is free after the OS: RAM "
                        f"overflows by {need - free:.2f} GiB")
    return (f"{where}: fits, {need:.2f} of {free:.2f} GiB free ({parts}); "
            f"{free - need:.2f} GiB to spare")
