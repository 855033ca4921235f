"""The LLM flags of `edgesim simulate` (a config.json model) and the `edgesim generate` command.

`add_parser(subparsers)` is the one hook `edgesim.cli` calls: it adds the decoder flags to the
existing `simulate` parser (a model ending in `.json`, or `zoo:NAME` of a shipped config, takes
the LLM path; any other model the original one) and registers `generate`.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgesim.cli import positive_int
from edgesim.errors import UserError
from edgesim.llm.config import DecoderConfig, is_config_ref, load_config

if TYPE_CHECKING:  # the cost models load with the command that needs them, not the parser
    from edgesim.llm.phases import LlmSimulation
    from hwmodels.cpu import CpuTarget

DEFAULT_CONTEXTS = "128,512,1024,2048,4096"


def parse_ints(text: str, flag: str) -> list[int]:
    """`1,2,4` or a range `start:stop:count` (inclusive, evenly spaced) as ints.

    Raises:
        UserError: not a list of integers or a range.
    """
    try:
        if text.count(":") == 2:
            a, b, n = (int(x) for x in text.split(":"))
            return sorted({round(a + (b - a) * i / max(n - 1, 1)) for i in range(n)})
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(flag, f"expected 1,2,4 or start:stop:count, got {text!r}") from None


def default_contexts(cfg: DecoderConfig) -> list[int]:
    """`DEFAULT_CONTEXTS` up to the model's trained length, which ends the list when it cuts
    it (SmolLM-135M: 2048)."""
    full = parse_ints(DEFAULT_CONTEXTS, "--context")
    kept = [c for c in full if c <= cfg.max_context]
    return kept if kept == full else sorted({*kept, cfg.max_context})


def add_simulate_args(p: argparse.ArgumentParser) -> None:
    """The decoder flags of `simulate` (used when the model is a config.json)."""
    g = p.add_argument_group("decoders (model = config.json or zoo:NAME of a shipped config)")
    g.add_argument("--formats", default="q4,q8",
                   help="weight formats: fp32, fp16, q<bits>[b<block>][z] (default q4,q8)")
    g.add_argument("--head-format", help="LM head / embedding format (default: each format)")
    g.add_argument("--kv-dtype", default="fp32", choices=("fp32", "fp16", "int8"))
    g.add_argument("--prompt-len", type=int, default=128, help="prompt tokens of the prefill")
    g.add_argument("--context", default=DEFAULT_CONTEXTS,
                   help="decode context lengths: 128,1024 or start:stop:count")
    g.add_argument("--ram", type=float, help="board RAM in GiB (default: the largest variant)")


def cmd_simulate_llm(args: argparse.Namespace) -> int:
    """`edgesim simulate config.json --target T`: fit line, prefill and decode tables."""
    from edgesim.llm.phases import simulate_llm
    from hwmodels.cpu import CpuTarget
    from hwmodels.target import load_target

    cfg, target = load_config(args.model), load_target(args.target)
    if not isinstance(target, CpuTarget):
        raise UserError(args.target, "decoder simulation needs a cpu target")
    contexts = parse_ints(args.context, "--context")
    if args.context == DEFAULT_CONTEXTS:
        contexts = default_contexts(cfg)
    formats = [f for f in args.formats.split(",") if f]
    sim = simulate_llm(cfg, target, formats, [args.threads] if args.threads else None, contexts,
                       args.prompt_len, args.kv_dtype, args.head_format)
    fits = [fit_line(cfg, f, target, args, max(contexts)) for f in formats]
    if args.json:
        print(json.dumps({**sim.to_dict(), "fit": fits}))
    else:
        print("\n".join(fits))
        print_tables(sim)
    return 0


def fit_line(cfg: DecoderConfig, fmt: str, target: CpuTarget, args: argparse.Namespace,
             context: int) -> str:
    """The RAM-fit line of one format (raises when it does not fit); a note when the target
    describes no RAM and no `--ram` was given."""
    from edgesim.llm.fit import check_fit, footprint

    if target.ram_options_gib is None and args.ram is None:
        return f"{cfg.name} {fmt}: {target.name} lists no RAM sizes; fit not checked (--ram)"
    fp = footprint(cfg, fmt, context, args.prompt_len, args.kv_dtype, args.head_format)
    return check_fit(fp, f"{cfg.name} {fmt}", target, args.ram)


def print_tables(sim: LlmSimulation) -> None:
    """The prefill (TTFT) table and one decode tokens/s table per format."""
    ths = "".join(f"{f'{t} thr':>10s}" for t in sim.threads)
    print(f"\nprefill of {sim.prompt_len} tokens on {sim.target}: time to first token (s)")
    print(f"{'format':10s}{ths}")
    for i, f in enumerate(sim.formats):
        print(f"{f:10s}" + "".join(f"{x:10.3f}" for x in sim.ttft_s[i]))
    for i, f in enumerate(sim.formats):
        print(f"\ndecode {sim.model} {f} (KV {sim.kv_dtype}): tokens/s  [MB read per token]")
        print(f"{'context':>10s}{ths}{'MB/token':>10s}")
        for j, c in enumerate(sim.contexts):
            row = "".join(f"{x:10.1f}" for x in sim.tokens_per_s[i, :, j])
            print(f"{c:10d}{row}{sim.bytes_per_token[i, j] / 1e6:10.1f}")


def _simulate_dispatch(original: Callable[[argparse.Namespace], int],
                       args: argparse.Namespace) -> int:
    if is_config_ref(args.model):
        return cmd_simulate_llm(args)
    if args.model.startswith("zoo:"):
        check_simulate_zoo_name(args.model[4:])
    return original(args)


def check_simulate_zoo_name(name: str) -> None:
    """Refuse a `zoo:` name `simulate` cannot take, listing the names it can: a misspelt
    decoder config would otherwise be answered with the fixed-shape models only.

    Raises:
        UserError: `name` is a KV-cache decoder or in none of the zoo's lists.
    """
    from edgesim.llm.config import shipped_configs
    from edgesim.zoo import DECODERS, ZOO

    if name in ZOO:
        return
    configs = ", ".join(shipped_configs())
    if name in DECODERS:
        raise UserError(f"zoo:{name}", "a KV-cache decoder: `edgesim generate` runs it and "
                        "`edgesim compile` plans it; `simulate` sizes decoders from a "
                        f"config.json or zoo: {configs}")
    raise UserError(f"zoo:{name}", f"no such zoo model; models: {', '.join(sorted(ZOO))}; "
                    f"decoder configs: {configs}")


def _model_bytes(ref: str) -> str | bytes:
    if not ref.startswith("zoo:"):
        return ref
    from edgesim.zoo import DECODERS  # onnx loads only for zoo models

    if ref[4:] not in DECODERS:
        raise UserError(ref, f"no such decoder; zoo decoders: {', '.join(sorted(DECODERS))}")
    return DECODERS[ref[4:]]().SerializeToString()


def cmd_generate(args: argparse.Namespace) -> int:
    """`edgesim generate MODEL --prompt ... --max-new-tokens N`: text and measured tokens/s."""
    from edgesim.llm.generate import generate  # onnxruntime loads only for this command

    g = generate(_model_bytes(args.model), args.prompt, args.max_new_tokens, args.threads)
    if args.json:
        print(json.dumps({"prompt": g.prompt, "text": g.text, "tokens": list(g.tokens),
                          "prefill_s": g.prefill_s, "decode_tokens_per_s": g.tokens_per_s}))
        return 0
    print(g.prompt + g.text)
    print(f"prefill {len(g.prompt.encode())} tokens in {g.prefill_s * 1e3:.1f} ms; decode "
          f"{len(g.tokens) - 1} tokens at {g.tokens_per_s:.1f} tokens/s "
          f"(threads {args.threads or 'onnxruntime default'})")
    return 0


def _is_decoder(ref: str | None) -> bool:
    """A trained zoo decoder, or an .onnx file naming past_key_values.* (a KV-cache decoder;
    a byte scan, so that other models' compile does not parse them twice)."""
    import mmap
    from pathlib import Path

    from edgesim.llm import TRAINED

    if ref is None:
        return False
    if ref.startswith("zoo:"):
        return ref[4:] in TRAINED
    path = Path(ref)
    if not (ref.endswith(".onnx") and path.is_file()):
        return False
    try:  # mapped, not read: the model may be gigabytes and is parsed again after this
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(b"past_key_values.") >= 0
    except (OSError, ValueError):  # empty or unreadable: the normal compile names the problem
        return False


def cmd_compile_decoder(args: argparse.Namespace) -> int:
    """`edgesim compile zoo:tiny_lm|decoder.onnx --target T --budget tok_s=.. [--calib
    text.txt]`: plan, model and report."""
    from edgesim.llm.compile import compile_decoder
    from hwmodels.cpu import CpuTarget
    from hwmodels.target import load_target

    target = load_target(args.target)
    if not isinstance(target, CpuTarget):
        raise UserError(args.target, "decoder compile needs a cpu target")
    r = compile_decoder(args.model, target, args.budget or "bits=4", args.method,
                        args.output, threads=[args.threads] if args.threads else None,
                        calib_text=_calib_text(getattr(args, "calib", None)),
                        force=getattr(args, "force", False))
    if getattr(args, "json", False):
        print(json.dumps({"plan": dict(r.plan), "kv_dtype": r.workload.kv_dtype,
                          "embedding": r.embedding, "files": dict(r.files)}))
    else:
        print("\n".join(f"wrote {f}" for f in r.files.values()))
    return 0


def _calib_text(path: str | None) -> bytes | None:
    """A decoder's `--calib`: any text file, read as bytes (the byte vocabulary's tokens)."""
    if path is None:
        return None
    from pathlib import Path

    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserError(path, f"cannot read the calibration text: {e.strerror}") from None


def _compile_dispatch(original: Callable[[argparse.Namespace], int],
                      args: argparse.Namespace) -> int:
    return cmd_compile_decoder(args) if _is_decoder(args.model) else original(args)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Hook the decoder flags into `simulate`, decoders into `compile`; register `generate`."""
    sim = subparsers.choices["simulate"]
    add_simulate_args(sim)
    sim.set_defaults(run=functools.partial(_simulate_dispatch, sim.get_default("run")))
    cp = subparsers.choices["compile"]
    cp.set_defaults(run=functools.partial(_compile_dispatch, cp.get_default("run")))
    from edgesim.cli import add_command

    gen = add_command(subparsers, "generate", "greedy text generation with a KV-cache decoder "
                      "in onnxruntime (byte vocabulary), measured tokens/s", cmd_generate)
    gen.add_argument("model", help="ONNX KV-cache decoder or zoo:NAME (e.g. zoo:kv_decoder)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--threads", type=positive_int, help="onnxruntime intra-op threads")
