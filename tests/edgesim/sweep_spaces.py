"""What the sweep tests share: a small grid space on the digits CNN, and running a space to its
stored records."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from edgesim.sweep import InlineExecutor, run_sweep
from edgesim.sweep.space import load_space
from edgesim.sweep.store import RESULTS_NAME, read_results

GRID = """
base: systolic-16x16
parameters:
  rows: [8, 16]
  cols: {range: [8, 24], step: 8}
  ifmap_sram_kib: {range: [16, 256], num: 3, scale: log}
  dataflow: [os, ws]
models: [zoo:digits_cnn]
"""


def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    """`text` (dedented) as a space file in `tmp_path`."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def stored_records(out: Path) -> dict[str, dict]:
    """The point records stored in `out`, by id."""
    header, records, good = read_results(out / RESULTS_NAME)
    assert header is not None
    # every whole line is a point record (no header line): a JSON-lines table, as pandas reads
    lines = (out / RESULTS_NAME).read_bytes()[:good].splitlines()
    assert all(set(json.loads(line)) >= {"id", "index", "params"} for line in lines)
    return {r["id"]: r for r in records}


def inline_sweep(space_file: Path, out: Path, **kw) -> dict[str, dict]:
    """Run the space in this process into `out`; its stored records."""
    with InlineExecutor() as ex:
        run_sweep(load_space(space_file), out, executor=ex, **kw)
    return stored_records(out)


def no_duplicates(out: Path) -> None:
    """Every point is stored once."""
    lines = (out / RESULTS_NAME).read_text().splitlines()[1:]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids))
