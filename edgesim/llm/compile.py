"""`edgesim compile` on a decoder -- the trained zoo decoder, or any float KV-cache decoder file
(onnxruntime-genai's or the opset-23 form, `edgesim.llm.decoder_file`) -- : a budgeted
per-layer format plan, the packed KV-cache model, and the report every compile writes (with
prefill / decode tables and a tokens/s-vs-perplexity front).

Calibration and scoring text: the user's bytes (`calib_text`, tokens = bytes: the model needs
a byte vocabulary, >= 256 ids), its first half calibrating and its second half scoring; by
default the shipped held-out KJV text.

Steps: HAWQ or LRP sensitivities of the linears through the IR (`edgesim.llm.sensitivity`);
the budget priced per layer (`edgesim.llm.budgets`) under each KV-cache dtype the source can be
built with (fp32 / fp16 for the zoo, the file's own otherwise) and its exact knapsack
(`plan_for_budget`), the dtype whose plan has the least omega plus the cache's measured harm
winning (`edgesim.llm.kv_choice`; `work.kv_dtype` is replaced by the choice); the embedding
table a choice in the same knapsack where the source can emit it (`edgesim.llm.embed_choice`:
untied, its own item; tied, the head's format decides the one shared table);
the plan emitted as MatMulNBits layers (`edgesim.zoo.decoder`); every uniform format and the
plan predicted on the target (tokens/s and time to first token per thread count) and scored in
onnxruntime on the held-out text (perplexity per byte).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from compiler.atomic import atomic_write
from edgesim.budget import parse_budget
from edgesim.errors import UserError
from edgesim.llm import TRAINED
from edgesim.llm.budgets import Workload, uniform_times
from edgesim.llm.config import DecoderConfig
from edgesim.llm.embed_choice import Table, describe_table, table_harms
from edgesim.llm.formats import EMBED
from edgesim.llm.kv_choice import KV_DTYPES, KvOption, choose_kv, describe, kv_harm, kv_options
from edgesim.llm.plan import plan_bytes
from edgesim.llm.sensitivity import METHODS, decoder_sensitivity
from edgesim.output import output_folder, publish, staging
from hwmodels.cpu import CpuTarget

# The uniform W2 / W4 / W8 formats and the block-128 and zero-point variants the HAWQ / LRP
# plans of bench/bench_llm_quality.py pick at 3 and 4 average bits (a plan over only bit widths
# ties uniform q4 at its size; these let it beat it)
CHOICES = ("q2z", "q2b128z", "q4b128", "q4b128z", "q4", "q4z", "q8b128", "q8")
DEFAULT_WORK = Workload()
SCORE_SEQ = 128   # bytes per perplexity window
FLOAT16 = 10      # onnx.TensorProto.FLOAT16 (onnx is imported only in frontend/emit/zoo)


@dataclass(frozen=True)
class Variant:
    """One plan's predicted and measured figures."""

    name: str
    linear_bytes: float
    perplexity: float
    tokens_per_s: tuple[float, ...]   # per thread count, at the workload's context
    ttft_s: tuple[float, ...]         # per thread count, for the workload's prompt
    table_bytes: float = 0.0          # an untied embedding table as emitted (tied: shared)


@dataclass(frozen=True)
class DecoderReport:
    """What `compile_decoder` decided and wrote."""

    model: str
    target: str
    budget: str
    method: str
    threads: tuple[int, ...]
    workload: Workload
    plan: Mapping[str, str]
    variants: tuple[Variant, ...]
    files: Mapping[str, str] = field(default_factory=dict)
    kv_options: tuple[KvOption, ...] = ()   # each KV dtype's plan objective (`kv_choice`)
    embedding: str = ""                      # the table's choice (`embed_choice.describe_table`)


def _per_thread(cfg: DecoderConfig, target: CpuTarget, work: Workload,
                threads: Sequence[int]) -> np.ndarray:
    """Uniform predictions [T, 2, B]: (decode s/token, ttft) of each format per thread count."""
    return np.array([uniform_times(cfg, target, CHOICES, replace(work, threads=t))
                     for t in threads])


def _priced(times: np.ndarray, params: Mapping[str, int], plan: Mapping[str, str]
            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(tokens/s, ttft) per thread count of `plan`: each layer's weight share of the uniform
    figures of its format (`edgesim.llm.budgets`)."""
    n = np.array(list(params.values()), np.float64)
    cols = [CHOICES.index(plan[name]) for name in params]
    mix = (times[:, :, cols] * (n / n.sum())).sum(axis=-1)           # [T, 2]
    return tuple(1.0 / mix[:, 0]), tuple(mix[:, 1])


@dataclass(frozen=True)
class Source:
    """A decoder to compile: its shape, linears, float model, (plan, KV dtype) -> model
    builder, the KV dtypes it can be built with, and whether a plan may name the embedding
    table (`EMBED`)."""

    name: str
    cfg: DecoderConfig
    params: Mapping[str, int]
    float_model: object
    build: Callable[[Mapping[str, str], str], bytes]
    kv_dtypes: tuple[str, ...] = ("fp32",)
    embeds: bool = False
    shapes: Mapping[str, tuple[int, int]] | None = None   # linear -> (in, out): exact bytes


def zoo_source(name: str, tied: bool = True) -> Source:
    """A trained zoo decoder; `tied=False` unties its head (a copy of the table as lm_head,
    the same function) so that the table is a plan item of its own."""
    from edgesim.zoo.decoder import decoder_config, kv_decoder, linear_shapes
    from edgesim.zoo.trained import TINY_LM_SHAPE, tiny_lm_weights

    shape, w = replace(TINY_LM_SHAPE, tied=tied), tiny_lm_weights()
    if not tied:
        w["lm_head.weight"] = np.ascontiguousarray(w["embed_tokens.weight"].T)

    def build(plan: Mapping[str, str], kv: str) -> Any:
        return kv_decoder(replace(shape, kv_dtype=kv), dict(plan), weights=w)

    shapes = linear_shapes(shape)
    params = {n: i * o for n, (i, o) in shapes.items()}
    return Source(name, decoder_config(shape, name), params, build({}, "fp32"),
                  lambda plan, kv: build(plan, kv).SerializeToString(), KV_DTYPES,
                  embeds=True, shapes=shapes)


def _file_source(path: str) -> Source:
    from edgesim.llm.decoder_file import apply_plan, read_decoder

    df = read_decoder(path)
    # a file's cache stays in the dtype it was exported with: rewriting it is not done here
    return Source(df.config.name, df.config, df.params(), df.model,
                  lambda plan, kv: apply_plan(df.model, plan, df.table).SerializeToString(),  # type: ignore[attr-defined]
                  (_file_kv_dtype(df.model),), embeds=df.table is not None,
                  shapes=df.linears)


def _file_kv_dtype(model: Any) -> str:
    """The dtype of a decoder file's first past_key_values input ("fp16" or "fp32")."""
    past = next(i for i in model.graph.input if i.name.startswith("past_key_values."))
    return "fp16" if past.type.tensor_type.elem_type == FLOAT16 else "fp32"


def texts(calib_text: bytes | None, vocab: int, calib_bytes: int, test_bytes: int,
          where: str = "--calib") -> tuple[np.ndarray, np.ndarray]:
    """(calibration, test) byte tokens: halves of the user's text, else the shipped text.

    Raises:
        UserError: a vocabulary below 256 bytes, or a text too short for one window of each.
    """
    if vocab < 256:
        raise UserError(where, f"text calibration needs a byte vocabulary (>= 256 ids); the "
                        f"model has {vocab}")
    if calib_text is None:
        from edgesim.zoo.trained import load_lm_text

        text = load_lm_text()
        return text["calib"][:calib_bytes], text["test"][:test_bytes]
    data = np.frombuffer(calib_text, np.uint8)
    half = len(data) // 2
    if half < SCORE_SEQ:
        raise UserError(where, f"text of {len(data)} bytes is too short: need >= "
                        f"{2 * SCORE_SEQ} (half calibrates, half scores)")
    return data[:half][:calib_bytes], data[half:][:test_bytes]


def _variants(src: Source, plans: Mapping[str, Mapping[str, str]], times: np.ndarray,
              test: np.ndarray, kv: str) -> tuple[Variant, ...]:
    from edgesim.llm.generate import score_text  # onnxruntime loads only here

    out = []
    for name, plan in plans.items():
        ppl = score_text(src.build(plan, kv), test, SCORE_SEQ).perplexity
        rates, ttfts = _priced(times, src.params, plan)
        out.append(Variant(name, plan_bytes(plan, src.params, src.shapes), ppl, rates, ttfts,
                           _table_bytes(src.cfg, plan)))
    return tuple(out)


def _table_bytes(cfg: DecoderConfig, plan: Mapping[str, str]) -> float:
    """Bytes of an untied embedding table in the plan's format (fp32 when it names none)."""
    return 0.0 if cfg.tied else Table(cfg.vocab, cfg.hidden, False, {}).stored_bytes(
        plan.get(EMBED, "fp32"))


def embedding_table(src: Source, calib: np.ndarray) -> Table | None:
    """The source's table as a plan item with its measured harms, None when the source
    cannot emit it in another format."""
    if not src.embeds:
        return None
    formats = CHOICES if src.cfg.tied else ("fp32", *CHOICES)
    harm = table_harms(lambda f: src.build({} if f == "fp32" else {EMBED: f}, "fp32"), calib,
                       formats)
    return Table(src.cfg.vocab, src.cfg.hidden, src.cfg.tied, harm)


def compile_decoder(ref: str | Source, target: CpuTarget, budget_text: str, method: str = "hawq",
                    out_dir: str | Path = "edgesim-out", work: Workload = DEFAULT_WORK,
                    threads: Sequence[int] | None = None, calib_bytes: int = 1024,
                    test_bytes: int = 4096, calib_text: bytes | None = None,
                    kv_dtype: str | None = None, force: bool = False) -> DecoderReport:
    """Plan, emit and report a decoder under a budget (module docstring).

    `out_dir` is claimed as `compile -o` claims it (`edgesim.output`): a non-empty folder
    edgesim did not make is refused before any work unless `force`, and no other file in it
    is touched.

    Args:
        ref: `zoo:tiny_lm`, a float KV-cache decoder `.onnx` file, or a `Source`.
        work: threads, context and prompt the budget is judged at; its `kv_dtype` is replaced
            by the chosen one.
        calib_text: the user's text (bytes); None: the shipped text.
        kv_dtype: pins the KV-cache dtype (no choice); None: the budget chooses.

    Raises:
        UserError: not a decoder this reads, an unknown method, a bad text, a KV dtype the
            source cannot be built with, or an unmeetable budget.
    """
    if method not in METHODS:
        raise UserError("--method", f"decoders take {' or '.join(METHODS)}, got {method!r}")
    with output_folder(out_dir, force) as folder:  # checked and locked before any work
        return _compile(ref, target, budget_text, method, folder, work, threads, calib_bytes,
                        test_bytes, calib_text, kv_dtype)


def _compile(ref: str | Source, target: CpuTarget, budget_text: str, method: str, out: Path,
             work: Workload, threads: Sequence[int] | None, calib_bytes: int, test_bytes: int,
             calib_text: bytes | None, kv_dtype: str | None) -> DecoderReport:
    src = ref if isinstance(ref, Source) else _source(ref)
    dtypes = kv_dtypes(src, kv_dtype)
    calib, test = texts(calib_text, src.cfg.vocab, calib_bytes, test_bytes)
    names = list(src.params)
    omega = decoder_sensitivity(src.float_model, names, CHOICES, calib, method)
    budget = parse_budget(budget_text)
    one = len(src.kv_dtypes) == 1   # nothing to compare the file's own cache dtype with
    harms = {kv: 0.0 if one else kv_harm(lambda d: src.build({}, d), calib, kv)
             for kv in dtypes}
    table = embedding_table(src, calib)
    options = kv_options(budget, src.cfg, target, src.params, omega, CHOICES, work, harms,
                         table, src.shapes)
    best = choose_kv(options, budget)
    work = replace(work, kv_dtype=best.kv_dtype)
    ths = tuple(threads or range(1, target.cores + 1))
    plans = {**{f: dict.fromkeys(names, f) for f in CHOICES}, "plan": best.plan}
    times = _per_thread(src.cfg, target, work, ths)
    variants = _variants(src, plans, times, test, best.kv_dtype)
    report = DecoderReport(src.name, target.name, str(budget), method, ths, work, best.plan,
                           variants, kv_options=options,
                           embedding=describe_table(table, best.plan))
    return write(report, out, src.build(best.plan, best.kv_dtype))


def kv_dtypes(src: Source, pinned: str | None) -> tuple[str, ...]:
    """The KV dtypes the plan chooses among: the source's, or only the pinned one.

    Raises:
        UserError: a pinned dtype the source cannot build its cache in.
    """
    if pinned is None:
        return src.kv_dtypes
    if pinned not in src.kv_dtypes:
        raise UserError("kv_dtype", f"{src.name} builds its KV cache in "
                        f"{' or '.join(src.kv_dtypes)}, not {pinned!r}")
    return (pinned,)


def _source(ref: str) -> Source:
    if ref.startswith("zoo:"):
        if ref[4:] not in TRAINED:
            raise UserError(ref, f"decoder compile needs a trained zoo decoder {list(TRAINED)} "
                            "or a decoder .onnx file")
        return zoo_source(ref[4:])
    return _file_source(ref)


def write(report: DecoderReport, out: Path, model: bytes) -> DecoderReport:
    """<model>.<target>.onnx, report.json, report.md and front.png into the claimed folder
    `out`: written into a staging folder inside it, then each renamed into place."""
    from edgesim import plot  # matplotlib loads only when a report is written

    names = {"model": f"{report.model}.{report.target}.onnx", "json": "report.json",
             "md": "report.md", "plot": "front.png"}
    report = replace(report, files={k: str(out / v) for k, v in names.items()})
    with staging(out) as stage:
        atomic_write(stage / names["model"], model)
        atomic_write(stage / names["json"], json.dumps(asdict(report), indent=1))
        atomic_write(stage / names["md"], markdown(report))
        points, marks, title = _front(report)
        plot.save(plot.front_plot(points, "tokens_per_s", "perplexity", marks=marks,
                                  title=title), stage / names["plot"])
        publish(stage, out)
    return report


def _front(report: DecoderReport) -> tuple[dict[str, list[float]], dict, str]:
    """Front plot inputs: tokens/s at the first thread count against perplexity, every
    variant marked by name."""
    vs = report.variants
    points = {"tokens_per_s": [v.tokens_per_s[0] for v in vs],
              "perplexity": [v.perplexity for v in vs]}
    marks = {v.name: (v.tokens_per_s[0], v.perplexity) for v in vs}
    title = (f"{report.model} on {report.target}: decode tokens/s ({report.threads[0]} thr) "
             f"vs perplexity, KV cache {report.workload.kv_dtype}")
    return points, marks, title


def markdown(r: DecoderReport) -> str:
    """The report: budget and plan, then prefill and decode tables per variant."""
    ths = " | ".join(f"{t} thr" for t in r.threads)
    head = (f"| variant | linear bytes | table bytes | ppl/byte | {ths} |\n|---|---|---|---|"
            + "---|" * len(r.threads))
    decode = [f"| {v.name} | {v.linear_bytes:.0f} | {v.table_bytes:.0f} | {v.perplexity:.3f} | "
              + " | ".join(f"{x:.1f}" for x in v.tokens_per_s) + " |" for v in r.variants]
    prefill = [f"| {v.name} | {v.linear_bytes:.0f} | {v.table_bytes:.0f} | {v.perplexity:.3f} | "
               + " | ".join(f"{x * 1e3:.2f}" for x in v.ttft_s) + " |" for v in r.variants]
    counts = {c: sum(f == c for n, f in r.plan.items() if n != EMBED) for c in CHOICES}
    w = r.workload
    return "\n".join([
        f"# {r.model} on {r.target}", "",
        f"Budget {r.budget}, {r.method} sensitivities; plan: {counts}; KV cache {w.kv_dtype}.",
        "", describe(r.kv_options, w.kv_dtype) if r.kv_options else "",
        "", r.embedding,
        "", f"## Decode tokens/s at context {w.context}", "", head, *decode, "",
        f"## Prefill: time to first token (ms) for {w.prompt_len} tokens", "", head, *prefill,
        "", "Perplexity: measured in onnxruntime on held-out KJV text; speeds: predicted.", ""])
