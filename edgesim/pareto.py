"""Pareto extraction over sweep results: load, flatten, pick the non-dominated designs, plot.

Results load from a sweep directory or its `results.jsonl`, a JSON file (a list of records, or
`{"points": [...]}`) or a CSV file (one header row of column names). A sweep record flattens to
columns: its parameters by name (`rows`, `clock_ghz`; lists as JSON text), the area proxy
columns, `<model>.<figure>` per model (`resnet50.latency_s`, `resnet50.alloc.total_sens`), and
the sums over models `latency_s` and `energy_j`. Records with an `error` are left out.

An objective names a column, or a unique column ending in `.<name>`, optionally with `:min` or
`:max`; throughput and utilisation are maximised by default, everything else minimised. The
non-dominated rows come from `compiler.pareto.non_dominated` (numba for more than two).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compiler.atomic import atomic_open
from compiler.pareto import non_dominated
from edgesim.errors import UserError

MAXIMISED = ("throughput_ips", "util")
SUMMED = ("latency_s", "energy_j")
DEFAULT_OBJECTIVES = ("area_proxy", "latency_s")


@dataclass(frozen=True, eq=False)  # holds arrays
class Table:
    """Columns of equal length: float arrays for numbers, object arrays for text.

    Attributes:
        columns: name -> array, in a stable order.
        dropped: records left out because they hold an error.
    """

    columns: Mapping[str, np.ndarray]
    dropped: int = 0

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def resolve(self, name: str) -> str:
        """The column `name` means: itself, or the unique column ending in `.name`."""
        if name in self.columns:
            return name
        matches = [c for c in self.columns if c.endswith(f".{name}")]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UserError("--objectives", f"{name!r} is ambiguous: {', '.join(matches)}")
        raise UserError("--objectives", f"no column {name!r} (columns: "
                        f"{', '.join(self.columns)})")

    def numeric(self, name: str) -> np.ndarray:
        """A column as float64, or UserError if it holds text."""
        col = self.columns[self.resolve(name)]
        if col.dtype.kind not in "iuf":
            raise UserError("--objectives", f"column {name!r} is not numeric")
        return col.astype(np.float64)

    def select(self, mask: np.ndarray) -> Table:
        """The rows where `mask` is True."""
        return Table({k: v[mask] for k, v in self.columns.items()}, self.dropped)


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One sweep record as flat columns (see the module docstring)."""
    out: dict[str, Any] = {"id": record.get("id"), "index": record.get("index")}
    for name, value in record.get("params", {}).items():
        out[name] = value if _is_scalar(value) else json.dumps(value, separators=(",", ":"))
    out.update({k: v for k, v in record.items() if k.startswith("area") and _is_scalar(v)})
    for label, figures in record.get("models", {}).items():
        for key, value in figures.items():
            if key == "alloc":
                out.update({f"{label}.alloc.{k}": v for k, v in value.items() if _is_scalar(v)})
            elif _is_scalar(value):
                out[f"{label}.{key}"] = value
    for name in SUMMED:
        parts = [f.get(name) for f in record.get("models", {}).values()]
        if parts and all(isinstance(p, int | float) for p in parts):
            out[name] = float(sum(parts))
    return out


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def table_from_rows(rows: Sequence[Mapping[str, Any]], dropped: int = 0) -> Table:
    """Columns from flat rows; a column is numeric when every present value is a number."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    return Table({n: _column([row.get(n) for row in rows]) for n in names}, dropped)


def _column(values: list[Any]) -> np.ndarray:
    numbers = [_number(v) for v in values]
    ints = [_int(v) for v in values]
    if values and all(i is not None for i in ints):
        return np.array(ints, dtype=np.int64)  # ints stay ints in front.csv and --json
    if all(x is not None for x, v in zip(numbers, values) if v not in (None, "")):
        return np.array([math.nan if x is None else x for x in numbers], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _int(v: Any) -> int | None:
    """An int, or the text of one (a CSV cell); None otherwise."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v if abs(v) < 2**63 else None
    if isinstance(v, str) and v.strip().lstrip("-").isdigit() and len(v.strip()) < 19:
        return int(v)
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v) if isinstance(v, str) and v.strip() else None
    except ValueError:
        return None


def load_results(path: str | Path) -> Table:
    """Load sweep results (directory, .jsonl, .json or .csv) as a `Table`.

    Raises:
        UserError: the file is missing, unreadable or of an unknown kind.
    """
    from edgesim.sweep.store import RESULTS_NAME, read_results

    p = Path(path)
    p = p / RESULTS_NAME if p.is_dir() else p
    if not p.is_file():
        raise UserError(str(p), "no such results file")
    if p.suffix == ".csv":
        with p.open(newline="") as f:
            return table_from_rows(list(csv.DictReader(f)))
    if p.suffix == ".json":
        return _records_table(_json_records(p))
    return _records_table(read_results(p)[1])


def _json_records(p: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(p.read_text())
    except ValueError as e:
        raise UserError(str(p), f"not valid JSON: {e}") from None
    if isinstance(data, dict):  # {"points": [...]}, or a compile report.json's "front"
        data = data.get("points", data.get("front"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(str(p), "expected a list of records, {\"points\": [...]} or a "
                        "compile report.json")
    return data


def _records_table(records: Sequence[Mapping[str, Any]]) -> Table:
    good = [r for r in records if "error" not in r]
    rows = [flatten(r) if "models" in r or "params" in r else dict(r) for r in good]
    return table_from_rows(rows, dropped=len(records) - len(good))


def parse_objective(text: str) -> tuple[str, str]:
    """"latency_s" -> ("latency_s", "min"); "throughput_ips" -> max; "x:max" -> ("x", "max")."""
    name, _, sense = text.strip().partition(":")
    if not name:
        raise UserError("--objectives", f"empty objective in {text!r}")
    if sense and sense not in ("min", "max"):
        raise UserError("--objectives", f"{text!r}: the sense must be min or max")
    default = "max" if name.rpartition(".")[2] in MAXIMISED else "min"
    return name, sense or default


def front_mask(table: Table, objectives: Sequence[str]) -> np.ndarray:
    """bool [n]: the rows no other row dominates over `objectives` (see `parse_objective`).

    Rows with a NaN objective (a figure missing from that record) are never on the front.
    """
    parsed = [parse_objective(o) for o in objectives]
    if not parsed:
        raise UserError("--objectives", "need at least one objective")
    points = np.column_stack([table.numeric(n) for n, _ in parsed]) if len(table) \
        else np.zeros((0, len(parsed)))
    ok = ~np.isnan(points).any(axis=1)
    mask = np.zeros(len(table), dtype=bool)
    mask[ok] = non_dominated(points[ok], [s for _, s in parsed])
    return mask


def write_csv(table: Table, path: str | Path) -> Path:
    """Write a table as CSV (one header row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(list(table.columns))
        for i in range(len(table)):
            writer.writerow([_cell(col[i]) for col in table.columns.values()])
    return path


def _cell(v: Any) -> Any:
    return "" if isinstance(v, float) and math.isnan(v) else v


@dataclass(frozen=True)
class ParetoResult:
    """What `pareto` found and wrote."""

    points: int
    dropped: int
    objectives: tuple[str, ...]
    front: Table
    files: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, objectives, files, and the front's rows."""
        rows = [{k: _cell(v[i].item() if hasattr(v[i], "item") else v[i])
                 for k, v in self.front.columns.items()} for i in range(len(self.front))]
        return {"points": self.points, "dropped": self.dropped,
                "objectives": list(self.objectives), "files": list(self.files), "front": rows}


FILE_SUFFIXES = {".csv": "csv", ".png": "png"}
UNWRITTEN_SUFFIXES = (".svg", ".pdf", ".jpg", ".jpeg")  # plots edgesim cannot write


def output_kind(output: str | Path | None) -> str:
    """What `output` names, by its suffix: "csv" (the front's CSV only), "png" (the front
    plot only) or "folder" (front.csv, front.png and summary.png; also for no output).

    Raises:
        UserError: a plot format edgesim does not write (e.g. .svg): the user expects that
            file, not a folder of that name.
    """
    suffix = Path(output).suffix.lower() if output is not None else ""
    if suffix in UNWRITTEN_SUFFIXES:
        raise UserError(str(output), f"edgesim writes plots as PNG, not {suffix}; name the "
                        "plot .png, the table .csv, or give a folder")
    return FILE_SUFFIXES.get(suffix, "folder")


def pareto(results: str | Path, objectives: Sequence[str] = DEFAULT_OBJECTIVES, *,
           output: str | Path | None = None, color: str | None = None,
           plots: bool = True, force: bool = False) -> ParetoResult:
    """Non-dominated designs of sweep results over `objectives`, written with plots.

    Args:
        results: a sweep directory, .jsonl, .json or .csv file.
        objectives: column names, each optionally ":min"/":max" (at least one).
        output: by suffix (`output_kind`): `x.csv` writes the front's CSV only, `x.png` the
            front plot only (each replaced atomically); anything else is a directory for
            front.csv, front.png and summary.png (default: the results' directory), claimed
            as compile claims `-o` (`edgesim.output`: new, empty or made by edgesim; else
            refused unless `force`; files replaced atomically, nothing else touched).
        color: a column colouring the front plot (default: the third objective, if any).
        plots: write the PNG plots (False with a .png `output` is refused).

    Returns:
        A `ParetoResult`.
    """
    kind = output_kind(output)
    one_file = Path(output) if output is not None and kind != "folder" else None
    if one_file is not None:
        _check_output_file(one_file, kind, plots)
    table = load_results(results)
    parsed = [parse_objective(o) for o in objectives]
    chosen = tuple(f"{table.resolve(n)}:{sense}" for n, sense in parsed)
    front = table.select(front_mask(table, chosen))
    def write(where: Path) -> list[Path]:
        files = [write_csv(front, where / "front.csv")]
        return files + (_plots(table, front, chosen, color, where) if plots and len(table)
                        else [])

    if one_file is not None:
        files = [write_csv(front, one_file) if kind == "csv"
                 else _front_png(table, chosen, color, one_file)]
    elif output is None:
        files = write(_results_dir(results))
    else:
        from edgesim.output import output_folder, publish, staging

        with output_folder(output, force) as outdir, staging(outdir) as folder:
            write(folder)
            files = publish(folder, outdir)
    return ParetoResult(len(table), table.dropped, chosen, front, tuple(map(str, files)))


def _check_output_file(path: Path, kind: str, plots: bool) -> None:
    """Before any work: the one file `path` names can be written (and is wanted)."""
    from edgesim.output import output_file

    if kind == "png" and not plots:
        raise UserError(str(path), "--no-plots with a .png output would write nothing")
    output_file(path)


def _results_dir(results: str | Path) -> Path:
    p = Path(results)
    return p if p.is_dir() else p.parent


def _plots(table: Table, front: Table, chosen: Sequence[str], color: str | None,
           where: Path) -> list[Path]:
    """front.png: the first two objectives, their 2-D front highlighted; summary.png: parallel
    coordinates of every objective over the front."""
    from edgesim import plot

    names = [c.rpartition(":")[0] for c in chosen]
    files = [_front_png(table, chosen, color, where / "front.png")]
    if len(names) > 1 and len(front):
        summary = plot.summary_plot({c: front.numeric(c) for c in names}, names,
                                    title=f"{len(front)} non-dominated designs")
        files.append(plot.save(summary, where / "summary.png"))
    return files


def _front_png(table: Table, chosen: Sequence[str], color: str | None, path: Path) -> Path:
    """The first two objectives of every row, their 2-D front highlighted, as PNG `path`."""
    from edgesim import plot

    names = [c.rpartition(":")[0] for c in chosen]
    x, y = names[0], names[min(1, len(names) - 1)]
    shade = table.resolve(color) if color else (names[2] if len(names) > 2 else None)
    columns = {c: table.numeric(c) for c in {x, y, *names, *([shade] if shade else [])}}
    mask = front_mask(table, chosen[:2])
    fig = plot.front_plot(columns, x, y, color=shade, highlight=mask,
                          title=f"{len(table)} designs, {int(mask.sum())} non-dominated")
    return plot.save(fig, path, make_folder=False)
