"""The `edgesim` command line: argparse subcommands, each mapped to one `edgesim.api` function.

Exit codes: 0 success; 2 bad input -- the project's own errors (ModelError, TargetError,
UserError, each naming where) and OS errors on the user's files -- printed as one line
`edgesim: <where>: <what>`; 1 an internal error (a bug: any other exception), with a pointer to
`--debug`; 130 interrupted (Ctrl-C). `--debug` shows tracebacks and verifies the IR.

Global flags (`--debug`, `-v`, `-q/--quiet`, `--json`) go before or after the subcommand. A
subcommand is registered by a function `add_parser(sub)` (see `registrars`): it calls
`add_command(sub, name, help, run)`, which gives the parser the global flags, and adds its own.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence

from compiler.errors import ModelError
from edgesim import __version__
from edgesim.errors import UserError

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C'd command
GLOBAL_FLAGS = {"debug": False, "verbose": 0, "quiet": False, "json": False}
# what `edgesim --help` tells a user (the module docstring's first line is for developers)
DESCRIPTION = ("Hardware-aware mixed-precision compilation and simulation of ONNX models for "
               "edge targets. Start with: edgesim compile --example --target rpi5 -o out")


def parse_input_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse repeated `--input-shape name=1x3x224x224` flags."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, sep, dims = item.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) <= 0:
            raise UserError("--input-shape",
                            f"expected name=1x3x224x224 (dims >= 1), got {item!r}")
        shapes[name] = shape
    return shapes


def positive_int(text: str) -> int:
    """argparse type of counts such as `--threads`: an integer >= 1 (0 reached the cost
    models and ended in an internal error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _global_flags() -> argparse.ArgumentParser:
    """The flags every command takes, before or after the subcommand. Their defaults are
    SUPPRESS so that a subcommand's parser never overwrites a value given before it."""
    g = argparse.ArgumentParser(add_help=False)
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks and verify the IR after loading")
    g.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="more detail on stderr (repeatable)")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress on stderr")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output on stdout (implies --quiet)")
    return g


GLOBAL = _global_flags()


def add_command(sub: argparse._SubParsersAction, name: str, help: str,
                run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A subcommand parser with the global flags; `run(args) -> exit code` executes it."""
    p = sub.add_parser(name, help=help, description=help, parents=[GLOBAL])
    p.set_defaults(run=run)
    return p


def registrars() -> tuple[Callable[[argparse._SubParsersAction], None], ...]:
    """Every subcommand family's `add_parser(sub)`; a new command module adds its own here."""
    from edgesim import commands
    from edgesim.llm import cli as llm_cli

    # llm_cli extends `simulate` (decoder configs) and so comes after the built-ins
    return (*commands.BUILTIN, llm_cli.add_parser)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    p = argparse.ArgumentParser(prog="edgesim", description=DESCRIPTION, parents=[GLOBAL])
    p.add_argument("--version", action="version", version=f"edgesim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in registrars():
        add(sub)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; global flags not given take their defaults."""
    args = build_parser().parse_args(argv)
    for name, default in GLOBAL_FLAGS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    args.quiet = args.quiet or args.json
    return args


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _is_project_error(e: BaseException) -> bool:
    """ModelError, TargetError or UserError (hwmodels.target loads lazily: it costs ~0.5 s)."""
    if isinstance(e, ModelError | UserError):
        return True
    target = sys.modules.get("hwmodels.target")
    return target is not None and isinstance(e, target.TargetError)


# commands that run the numba cost kernels (their first compile takes half a minute)
COST_COMMANDS = frozenset({"simulate", "compile", "allocate", "sweep", "validate"})  # not pareto:
# it reads results (its numba archive scan is compiler.pareto's, not a cost kernel)


# printed when numba is about to compile a cold kernel module, before it does
COMPILE_NOTICE = "edgesim: compiling cost kernels (first run only)..."
JIT_LOGGER = "hwmodels.kernels.jit"  # where `kernels.jit` logs its first compile


class _NoticeOnce(logging.Handler):
    """Prints COMPILE_NOTICE on stderr at the first compile record (of several modules)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.printed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.printed:
            print(COMPILE_NOTICE, file=sys.stderr, flush=True)
            self.printed = True


@contextlib.contextmanager
def announce_compile(args: argparse.Namespace) -> Iterator[None]:
    """While the command runs, say once on stderr that numba is compiling the cost kernels:
    only when it does (`hwmodels.kernels.jit` logs it when a kernel module a call compiles
    is cold; small calls run in Python and compile nothing)."""
    if args.command not in COST_COMMANDS or args.quiet:
        yield
        return
    logger, handler = logging.getLogger(JIT_LOGGER), _NoticeOnce()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `edgesim` console script; returns the exit code."""
    if argv is None:  # the console script: the process ends when this returns
        exit_without_final_collection()
    args = parse_args(argv)  # argparse itself exits 2 on bad flags
    try:
        with announce_compile(args):
            return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("edgesim: interrupted", file=sys.stderr)  # outputs are atomic: nothing half-written
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.debug:
            raise
        if _interrupted(e):  # Ctrl-C inside a module's import surfaces as ImportError
            print("edgesim: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        return _report(e)


def exit_without_final_collection() -> None:
    """At exit, move every object to the garbage collector's permanent generation first, so
    the interpreter's shutdown does not trace numba's typing and lowering registries (~0.26
    CPU-s of a `quantize --bits 4` run, 0.3 s after any numba kernel call); objects are still
    freed by reference counts, and atexit handlers and `weakref.finalize` still run."""
    import atexit
    import gc

    atexit.register(gc.freeze)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while the body runs (a command importing its modules:
    the collector walked the ~140 k objects they make again and again, ~0.13 of silero's
    ~1.3 CPU-s compile, and found next to nothing), then those objects are frozen: module
    state the collector need not walk again. The collector is on again afterwards, unless
    it was off before."""
    import gc

    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_on:
            gc.enable()


def _interrupted(e: BaseException) -> bool:
    """True if a KeyboardInterrupt is anywhere in `e`'s chain of causes."""
    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _report(e: Exception) -> int:
    """Print the one line for `e` and return its exit code."""
    if _is_project_error(e):
        print(f"edgesim: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(e, OSError):  # unreadable input, unwritable output, full disk
        where = f"{e.filename}: " if e.filename else ""
        print(f"edgesim: {where}{_one_line(e.strerror or e)}", file=sys.stderr)
        return EXIT_USAGE
    print(f"edgesim: internal error ({type(e).__name__}: {_one_line(e)[:300]}); this is a "
          "bug in edgesim -- rerun with --debug for the traceback and report it",
          file=sys.stderr)
    return EXIT_INTERNAL
