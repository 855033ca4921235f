"""`edgesim sweep` spaces: parsing, enumeration (grid, random and Latin hypercube draws as
documented, point ids independent of spelling) and one-line errors naming the field."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from edgesim.errors import UserError
from edgesim.sweep.points import enumerate_points
from edgesim.sweep.space import load_space
from tests.edgesim.sweep_spaces import GRID, write_space

ROOT = Path(__file__).resolve().parents[2]


def test_grid_enumerates_the_cartesian_product(tmp_path: Path) -> None:
    points = enumerate_points(load_space(write_space(tmp_path, GRID)))
    # step 8 from 8 to 24 inclusive; 3 log-spaced values from 16 to 256: 16, 64, 256
    expected = list(itertools.product([8, 16], [8, 16, 24], [16.0, 64.0, 256.0], ["os", "ws"]))
    assert [tuple(v for _, v in p.params) for p in points] == expected
    assert [p.index for p in points] == list(range(36))
    assert len({p.id for p in points}) == 36


def test_point_ids_do_not_depend_on_spelling(tmp_path: Path) -> None:
    # 16 and 16.0 for a float field, and the same point reached by a range or a list
    a = load_space(write_space(tmp_path, GRID.replace("{range: [16, 256], num: 3, scale: log}",
                                                      "[16, 64.0, 256]"), "a.yaml"))
    b = load_space(write_space(tmp_path, GRID, "b.yaml"))
    assert [p.id for p in enumerate_points(a)] == [p.id for p in enumerate_points(b)]


RANDOM = """
base: systolic-16x16
parameters:
  rows: [8, 16, 32]
  clock_ghz: {uniform: [0.25, 1.0]}
  dram_bandwidth_gbps: {loguniform: [1, 100]}
  cols: {uniform: [4, 9]}
search: {method: METHOD, samples: N, seed: SEED}
models: [zoo:digits_cnn]
"""


def _sampled(tmp_path: Path, method: str, n: int, seed: int = 3) -> list:
    text = RANDOM.replace("METHOD", method).replace("N,", f"{n},").replace("SEED", str(seed))
    path = write_space(tmp_path, text, f"{method}{n}-{seed}.yaml")
    return enumerate_points(load_space(path))


def test_random_search_follows_its_documented_draws(tmp_path: Path) -> None:
    points = _sampled(tmp_path, "random", 40)
    # the documented procedure, written out: point by point, parameter by parameter
    rng = np.random.default_rng(3)
    for p in points:
        rows, u_clock, u_bw, u_cols = (int(rng.integers(3)), rng.random(), rng.random(),
                                       rng.random())
        want = {"rows": [8, 16, 32][rows], "clock_ghz": 0.25 + u_clock * 0.75,
                "dram_bandwidth_gbps": 10 ** (2 * u_bw), "cols": 4 + math.floor(u_cols * 6)}
        got = dict(p.params)
        assert got["rows"] == want["rows"] and got["cols"] == want["cols"]
        assert got["clock_ghz"] == pytest.approx(want["clock_ghz"], rel=1e-12)
        assert got["dram_bandwidth_gbps"] == pytest.approx(want["dram_bandwidth_gbps"], rel=1e-12)
    # prefix-stable: a longer sample starts with the shorter one; another seed differs
    assert [p.id for p in _sampled(tmp_path, "random", 60)][:40] == [p.id for p in points]
    assert {p.id for p in _sampled(tmp_path, "random", 40, seed=4)} != {p.id for p in points}


def test_latin_hypercube_puts_one_sample_in_every_stratum(tmp_path: Path) -> None:
    n = 24
    points = [dict(p.params) for p in _sampled(tmp_path, "lhs", n)]
    strata = {
        "clock_ghz": [(p["clock_ghz"] - 0.25) / 0.75 for p in points],
        "dram_bandwidth_gbps": [math.log10(p["dram_bandwidth_gbps"]) / 2 for p in points],
    }
    for name, u in strata.items():
        assert sorted(math.floor(x * n) for x in u) == list(range(n)), name
    # a list of 3 values over 24 strata: each value exactly 8 times; cols 4..9: 4 times each
    assert sorted(np.unique([p["rows"] for p in points], return_counts=True)[1]) == [8, 8, 8]
    assert list(np.unique([p["cols"] for p in points], return_counts=True)[1]) == [4] * 6
    assert len(_sampled(tmp_path, "lhs", n)) == n
    assert [p.id for p in _sampled(tmp_path, "lhs", n)] == [p.id for p in
                                                              _sampled(tmp_path, "lhs", n)]


BAD_SPACES = [
    ("parameters:\n  rowz: [8]", "parameters.rowz", "unknown parameter"),
    ("parameters:\n  rows: []", "parameters.rows", "empty"),
    ("parameters:\n  rows: {range: [64, 8], step: 8}", "parameters.rows.range", "empty range"),
    ("parameters:\n  rows: [8, sixteen]", "parameters.rows[1]", "expected int"),
    ("parameters:\n  rows: [8.5]", "parameters.rows[0]", "expected int"),
    ("parameters:\n  rows: 16", "parameters.rows", "expected a list"),
    ("parameters:\n  clock_ghz: [-1]", "parameters.clock_ghz[0]", "must be > 0"),
    ("parameters:\n  dataflow: [xs]", "parameters.dataflow[0]", "must be one of"),
    ("parameters:\n  clock_ghz: {uniform: [0.5, 1]}", "parameters.clock_ghz", "random or lhs"),
    ("parameters:\n  precisions: [[{bits: 9, macs_per_pe_cycle: 1}]]",
     "parameters.precisions[0]", "precisions[0].bits"),
    ("parameters:\n  rows: [8]\nmodles: []", "modles", "unknown key"),
    ("parameters:\n  rows: [8]\nsearch: {method: lhs}", "search.samples", "missing"),
    ("parameters:\n  rows: [8]\nsearch: {method: grid, samples: 3}", "search.samples", "grid"),
    ("parameters:\n  rows: [8]\noptimise: {allocate: {metric: area, fraction: 0.5}}",
     "optimise.allocate.metric", "must be one of"),
    ("parameters:\n  rows: [8]\noptimise: {allocate: {metric: latency}}",
     "optimise.allocate", "exactly one of budget"),
    ("parameters:\n  rows: [8]\noptimise: {allocate: {budget: latency=3parsecs}}",
     "optimise.allocate.budget", "unknown unit"),
    ("parameters:\n  rows: [8]\nthreads: 2", "threads", "not for macarray bases"),
    ("parameters:\n  rows: [8]\nmodels: [zoo:digits_cnn, zoo:digits_cnn]", "models[1]",
     "a second model"),
]


@pytest.mark.parametrize("body,field,what", BAD_SPACES)
def test_malformed_space_is_one_line_naming_the_field(tmp_path: Path, body: str, field: str,
                                                      what: str) -> None:
    text = f"base: systolic-16x16\nmodels: [zoo:digits_cnn]\n{body}\n"
    path = write_space(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_space(path)
    assert str(e.value).startswith(f"{path}: {field}: "), str(e.value)
    assert what in e.value.what and "\n" not in str(e.value)


def test_bad_base_and_model_name_their_field(tmp_path: Path) -> None:
    for text, field in (("base: nope\nparameters: {rows: [8]}\nmodels: [zoo:digits_cnn]",
                         "base"),
                        ("base: systolic-16x16\nparameters: {rows: [8]}\nmodels: [zoo:nope]",
                         "models[0].model")):
        path = write_space(tmp_path, text)
        with pytest.raises(UserError) as e:
            load_space(path)
        assert str(e.value).startswith(f"{path}: {field}: "), str(e.value)
