"""CLI conventions and the Python API's promises: exit codes by error kind, global flags on
either side of the subcommand, --version, --json everywhere, DASK_SCHEDULER_ADDRESS, fit
warnings, --min-fidelity, and the API taking what the CLI takes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tomllib

import edgesim
from edgesim import api, cli
from edgesim.errors import UserError
from edgesim.zoo import load_digits_data

ROOT = Path(__file__).resolve().parents[2]


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_is_the_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    printed = capsys.readouterr().out.strip()
    assert printed == f"edgesim {version}" == f"edgesim {edgesim.__version__}"


def test_global_flags_before_or_after_the_subcommand(capsys) -> None:
    before = _main(capsys, "--json", "inspect", "zoo:digits_cnn")
    after = _main(capsys, "inspect", "zoo:digits_cnn", "--json")
    assert before == after and before[0] == 0
    assert json.loads(before[1])["model"] == "digits_cnn"
    args = cli.parse_args(["targets", "--debug", "-v", "-v"])
    assert (args.debug, args.verbose, args.quiet, args.json) == (True, 2, False, False)
    assert cli.parse_args(["--json", "targets"]).quiet  # --json implies quiet


@pytest.mark.parametrize(("raised", "code", "needle"), [
    (UserError("--bits", "bad width"), 2, "edgesim: --bits: bad width"),
    (FileNotFoundError(2, "No such file or directory", "x.npz"), 2, "edgesim: x.npz: No such"),
    (IndexError("list index out of range"), 1, "edgesim: internal error (IndexError"),
    (ValueError("a bug, not bad input"), 1, "edgesim: internal error (ValueError"),
    (KeyboardInterrupt(), 130, "edgesim: interrupted"),
])
def test_exit_codes_by_error_kind(capsys, monkeypatch, raised: BaseException, code: int,
                                  needle: str) -> None:
    def boom(*a, **k):  # noqa: ANN002, ANN003
        raise raised

    monkeypatch.setattr(api, "inspect", boom)
    got, out, err = _main(capsys, "inspect", "zoo:digits_cnn")
    assert got == code and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(needle), err
    if code == 1:
        assert "--debug" in err
        monkeypatch.setattr(sys, "argv", ["edgesim"])
        with pytest.raises(type(raised)):
            cli.main(["inspect", "zoo:digits_cnn", "--debug"])  # --debug: the traceback


def test_dask_scheduler_address_is_honoured(capsys, monkeypatch) -> None:
    seen = {}

    def fake_sweep(space, output, **kw):  # noqa: ANN001, ANN003
        seen.update(kw)
        raise UserError("sweep", "stop here")

    import edgesim.sweep

    monkeypatch.setattr(edgesim.sweep, "sweep", fake_sweep)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.7:8786")
    assert _main(capsys, "sweep", "macarray", "-o", "r")[0] == 2
    assert seen["scheduler"] == "tcp://10.0.0.7:8786"
    assert _main(capsys, "sweep", "macarray", "-o", "r", "--workers", "2")[0] == 2
    assert seen["scheduler"] is None and seen["workers"] == 2  # an explicit pool wins
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    import dask.config

    with dask.config.set({"scheduler-address": "tcp://10.0.0.8:8786"}):  # Dask's own config
        assert _main(capsys, "sweep", "macarray", "-o", "r")[0] == 2
    assert seen["scheduler"] == "tcp://10.0.0.8:8786"


def test_sweep_json(tmp_path: Path, capsys) -> None:
    space = tmp_path / "s.yaml"
    space.write_text("base: systolic-16x16\nparameters: {rows: [8, 16]}\n"
                     "models: [zoo:digits_cnn]\n")
    code, out, err = _main(capsys, "sweep", str(space), "-o", str(tmp_path / "r"),
                           "--workers", "1", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert (s["points"], s["computed"], s["errors"]) == (2, 2, 0)


def test_simulate_says_what_overflows_an_mcu() -> None:
    s = api.simulate("zoo:resnet18", "cortex-m7")
    warnings = [n for n in s.notes if n.startswith("WARNING: does not fit")]
    assert len(warnings) == 2
    # fp32 resnet18: 11.69 M parameters x 4 bytes; the STM32H743 has 2 MiB of flash
    assert "46.7" in warnings[0] and f"{2 * 2**20 / 1e6:.3f} MB" in warnings[0]
    assert not [n for n in api.simulate("zoo:digits_cnn", "rpi5").notes if "WARNING" in n]


def test_min_fidelity_fails_a_collapsed_plan_and_writes_nothing(tmp_path: Path) -> None:
    d = load_digits_data()
    calib = {"input": d["x_calib"][:64], "labels": d["y_calib"][:64]}
    with pytest.raises(UserError, match="--min-fidelity"):
        api.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", calib=calib,
                    method="proxy", weight_bits=(2,), budget="bits=2", min_fidelity=0.99)
    assert not (tmp_path / "o").exists()


def test_allocate_takes_zoo_names_and_budget_strings() -> None:
    plan = edgesim.allocate("zoo:digits_cnn", "rpi4", method="proxy", budget="size=0.05MB")
    g = api.load_graph("zoo:digits_cnn")
    assert plan.bits.shape == (len(g.layers), 2)
    assert plan.metric == "size" and plan.total <= 50_000
    # the size it predicts is the file's: the packed weight bytes of its own assignment and
    # the graph around them (nodes, names, activation grids, metadata: ~5 kB here)
    t = g.layer_table()
    w = plan.bits[:, 0]
    packed = np.where(w < 32, np.ceil(t.w_elems * w / 8), t.w_elems * 4)
    assert packed.sum() * 0.95 + 2_000 < plan.total <= packed.sum() * 1.05 + 6_000


def test_quantize_accepts_a_labelled_npz(tmp_path: Path) -> None:
    d = load_digits_data()
    npz = tmp_path / "calib.npz"
    np.savez(npz, input=d["x_calib"][:16], labels=d["y_calib"][:16])
    r = api.quantize("zoo:digits_cnn", 8, tmp_path / "m.onnx", calib=npz)
    assert "16 samples" in r.calibration
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": d["x_test"][:1]})
    assert y.shape == (1, 10)


def test_cli_console_script_reports_its_version() -> None:
    exe = Path(sys.executable).parent / "edgesim"
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("edgesim ")


@pytest.mark.parametrize(("budget", "width"), [("bits=4", 4), ("bits=5", 4), (None, 8)])
def test_method_uniform_means_one_width_for_every_mac_layer(tmp_path: Path, budget: str | None,
                                                            width: int) -> None:
    r = api.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", method="uniform",
                    budget=budget, calib_random=8)
    widths = {x.w_bits for x in r.layers if x.sensitivity is not None}
    assert widths == {width}  # the widest candidate (2, 3, 4, 6, 8) within the budget
    assert r.avg_weight_bits == width


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_lines_elsewhere_nothing_when_quiet() -> None:
    from edgesim.progress import Progress

    tty, pipe, quiet = _Terminal(), io.StringIO(), _Terminal()
    runs = {id(stream): Progress(total=2, quiet=q, stream=stream)
            for stream, q in ((tty, False), (pipe, False), (quiet, True))}
    for p in runs.values():
        with p.phase("loading"):
            pass
        with p.phase("analysis"):
            pass
    p = runs[id(pipe)]
    assert "\r" in tty.getvalue() and "[2/2] analysis: done" in tty.getvalue()  # tqdm redraws
    assert pipe.getvalue().splitlines() == [
        "[1/2] loading ...", f"[1/2] loading: done in {p.timings['loading']:.1f} s",
        "[2/2] analysis ...", f"[2/2] analysis: done in {p.timings['analysis']:.1f} s"]
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(("dims", "expected"), [
    (["N", 3, "H", "W"], "x=1x3x224x224"), ([-1, 3, 224, 224], "x=1x3x224x224"),
    ([2, "batch", 128], "x=2x1x128"), (["seq"], "x=1"), ([0, "T", 64], "x=1x128x64")])
def test_input_shape_hints_are_accepted_by_the_parser(dims: list, expected: str) -> None:
    from compiler.frontend.inputs import input_shape_hint

    hint = input_shape_hint("x", dims)
    assert hint.startswith(f"--input-shape {expected} (guessed: ")
    shape = cli.parse_input_shapes([hint.split()[1]])["x"]  # the CLI's own parser takes it
    assert len(shape) == len(dims) and min(shape) >= 1


def test_a_knee_that_barely_compresses_says_why(tmp_path: Path) -> None:
    r = api.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "o", method="proxy",
                    calib_random=8)
    notes = [n for n in r.notes if n.startswith("the knee keeps")]
    assert r.avg_weight_bits > 16 and len(notes) == 1
    assert f"{r.avg_weight_bits:.1f} weight bits" in notes[0] and "--budget" in notes[0]
    r4 = api.compile("zoo:digits_cnn", "rpi5", outdir=tmp_path / "b", method="proxy",
                     calib_random=8, budget="bits=4")
    assert not [n for n in r4.notes if n.startswith("the knee keeps")]


@pytest.mark.parametrize("item", ["input=1x0", "input=1x-4"])
def test_an_input_shape_with_a_dim_below_one_says_dims_must_be_positive(item: str) -> None:
    """`input=1x0` is in the right form; the message must say what is wrong with it."""
    with pytest.raises(UserError, match=r"dims >= 1\), got 'input=1x"):
        cli.parse_input_shapes([item])
