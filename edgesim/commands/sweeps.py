"""Design-space commands: `sweep` (a space YAML through the cost models, locally or on Dask)
and `pareto` (the non-dominated points of sweep or compile results)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from edgesim.cli import add_command
from edgesim.errors import UserError


def cmd_sweep(args: argparse.Namespace) -> int:
    """`edgesim sweep`: run a design space, on Dask's scheduler when one is configured."""
    from edgesim.sweep import sweep

    scheduler = args.scheduler
    if scheduler is None and args.workers is None and args.dask_local is None:
        scheduler = dask_scheduler_address()
    s = sweep(args.space, args.output, workers=args.workers, scheduler=scheduler,
              dask_local=args.dask_local, batch_size=args.batch_size, progress=not args.quiet)
    if args.json:
        print(json.dumps(dataclasses.asdict(s)))
        return 0
    print(f"{s.path}: {s.computed} points computed ({s.points_per_s:,.0f}/s), "
          f"{s.skipped} already stored, {s.errors} recorded with an error")
    return 0


def dask_scheduler_address() -> str | None:
    """The scheduler Dask itself is configured with: $DASK_SCHEDULER_ADDRESS, else the
    `scheduler-address` key of Dask's config files (when dask is installed)."""
    if os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return os.environ["DASK_SCHEDULER_ADDRESS"]
    try:
        import dask.config
    except ImportError:
        return None
    return dask.config.get("scheduler-address", None) or None


def cmd_pareto(args: argparse.Namespace) -> int:
    """`edgesim pareto`: the non-dominated points of results, as a CSV and plots."""
    from edgesim.pareto import pareto

    objectives = [o for o in (args.objectives or "").split(",") if o.strip()]
    if args.x or args.y:
        if not (args.x and args.y):
            raise UserError("--x/--y", "give both axes")
        objectives = [args.x, args.y, *[o for o in objectives if o not in (args.x, args.y)]]
    r = pareto(args.results, objectives or ["area_proxy", "latency_s"], output=args.output,
               color=args.color, plots=not args.no_plots, force=args.force)
    files = list(r.files)
    if args.json:
        print(json.dumps({**r.to_dict(), "files": files}))
        return 0
    print(f"{len(r.front)} non-dominated of {r.points} points over {', '.join(r.objectives)}"
          f" ({r.dropped} records with errors left out)")
    for f in files:
        print(f"wrote {f}")
    return 0


def add_sweep(sub: argparse._SubParsersAction) -> None:
    """Register `sweep`."""
    sw = add_command(sub, "sweep", "design-space exploration of a space YAML", cmd_sweep)
    sw.add_argument("space", help="space YAML, or a shipped space by name (macarray, "
                    "cpu-whatif)")
    sw.add_argument("-o", "--output", required=True,
                    help="results folder (re-running the same command resumes it)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local process-pool workers (default: all "
                       "cores if they pay for their start, else this process)")
    where.add_argument("--scheduler", metavar="tcp://HOST:8786", help="a Dask scheduler "
                       "(default: $DASK_SCHEDULER_ADDRESS or Dask's config, if set)")
    where.add_argument("--dask-local", type=int, metavar="N",
                       help="start a Dask LocalCluster of N workers on 127.0.0.1")
    sw.add_argument("--batch-size", type=int, help="points per task (default: ~8 per worker)")


def add_pareto(sub: argparse._SubParsersAction) -> None:
    """Register `pareto`."""
    pa = add_command(sub, "pareto", "non-dominated points of sweep or compile results",
                     cmd_pareto)
    pa.add_argument("results", help="sweep folder, .jsonl, .json (incl. report.json) or .csv")
    pa.add_argument("--x", help="column on the x axis (first objective)")
    pa.add_argument("--y", help="column on the y axis (second objective)")
    pa.add_argument("--objectives", help="comma-separated columns, each optionally :min/:max "
                    "(default: area_proxy,latency_s)")
    pa.add_argument("--color", help="column colouring the front plot")
    pa.add_argument("-o", "--output", help="by suffix: NAME.csv writes the front's table only, "
                    "NAME.png the front plot only, anything else is a folder for front.csv/"
                    "front.png/summary.png (default: beside the results)")
    pa.add_argument("--no-plots", action="store_true", help="write front.csv only")
    pa.add_argument("--force", action="store_true", help="write into a non-empty -o folder "
                    "edgesim did not make (its same-named files are replaced, nothing else)")
