"""`-o DIR` never loses a user's data: a file (and a subfolder) the user keeps in DIR survives
success, failure, Ctrl-C and kill -9 at random moments; two runs into one folder never
interleave; every file edgesim leaves is whole (no half-written outputs)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from compiler.atomic import atomic_write
from edgesim.errors import UserError
from edgesim.output import MARKER, STAGING_PREFIX, output_folder, publish, staging

ROOT = Path(__file__).resolve().parents[2]
COMPILE = ["compile", "--example", "--method", "proxy", "--quiet"]


def _run(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edgesim", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _user_files(folder: Path) -> None:
    (folder / "notes.txt").write_text("mine")
    (folder / "data").mkdir()
    (folder / "data" / "x.bin").write_bytes(b"\x00\x01")


def _check_user_files(folder: Path) -> None:
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "data" / "x.bin").read_bytes() == b"\x00\x01"


def _check_whole(folder: Path) -> None:
    """Every edgesim output present parses; no staging folder or temporary file is left."""
    names = {p.name for p in folder.iterdir()}
    assert not [n for n in names if n.startswith(STAGING_PREFIX) or n.endswith(".tmp")], names
    if "report.json" in names:
        json.loads((folder / "report.json").read_text())
    if "model.rpi5.onnx" in names:
        onnx.checker.check_model(onnx.load(folder / "model.rpi5.onnx"))


# ---- in-process: the rules of output_folder ----

def test_new_folder_is_marked_and_a_failed_run_removes_it(tmp_path: Path) -> None:
    with output_folder(tmp_path / "new") as out:
        assert (out / MARKER).is_file()
    assert (tmp_path / "new" / MARKER).is_file()
    with pytest.raises(RuntimeError), output_folder(tmp_path / "failed"):
        raise RuntimeError("boom")
    assert not (tmp_path / "failed").exists()


def test_foreign_folder_is_refused_unless_forced(tmp_path: Path) -> None:
    _user_files(tmp_path)
    with pytest.raises(UserError, match="--force"), output_folder(tmp_path):
        pass
    assert not (tmp_path / MARKER).exists()
    with output_folder(tmp_path, force=True) as out, staging(out) as stage:
        atomic_write(stage / "report.md", "new")
        publish(stage, out)
    assert (tmp_path / "report.md").read_text() == "new"
    _check_user_files(tmp_path)
    with output_folder(tmp_path):  # now edgesim's (marked): no --force needed
        pass


def test_empty_folder_and_failure_inside_a_kept_folder(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt), output_folder(tmp_path / "out") as out:
        _user_files(out)
        with staging(out) as stage:
            atomic_write(stage / "report.md", "half")
            raise KeyboardInterrupt
    _check_user_files(tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()
    _check_whole(tmp_path / "out")


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path: Path) -> None:
    with output_folder(tmp_path / "o"):
        with pytest.raises(UserError, match="another edgesim run"), output_folder(tmp_path / "o"):
            pass
    with output_folder(tmp_path / "o"):  # released
        pass


def test_file_and_missing_parent_are_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a folder"), output_folder(tmp_path / "f"):
        pass
    with pytest.raises(UserError, match="does not exist"), output_folder(tmp_path / "a" / "b"):
        pass
    assert (tmp_path / "f").read_text() == "x"


# ---- the CLI, as a user runs it ----

def test_cwd_refused_before_any_work_then_forced(tmp_path: Path) -> None:
    _user_files(tmp_path)
    refused = _run(*[a for a in COMPILE if a != "--quiet"], "-o", ".", cwd=tmp_path)
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "--force" in err, err
    assert "[1/7]" not in err  # refused before the first phase began
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    forced = _run(*COMPILE, "-o", ".", "--force", cwd=tmp_path)
    out, err = forced.communicate(timeout=300)
    assert forced.returncode == 0, err
    _check_user_files(tmp_path)
    _check_whole(tmp_path)
    assert {"model.rpi5.onnx", "report.json", "report.md", "pareto.png"} <= {
        p.name for p in tmp_path.iterdir()}


def test_failure_keeps_user_files_and_adds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _user_files(out)
    p = _run(*COMPILE, "--budget", "size=1kB", "-o", str(out), "--force", cwd=tmp_path)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "smallest feasible budget" in err, err
    _check_user_files(out)
    assert sorted(x.name for x in out.iterdir()) == [MARKER, "data", "notes.txt"]


@pytest.mark.parametrize("seed", [3])
def test_ctrl_c_at_a_random_moment(tmp_path: Path, seed: int) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _user_files(out)
    p = _run(*COMPILE, "-o", str(out), "--force", cwd=tmp_path)
    time.sleep(random.Random(seed).uniform(1.5, 4.0))
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    # 130, or death by SIGINT after edgesim's handler ran (seen once under heavy load: the
    # interpreter re-raised the signal on exit); a shell reports both as 130
    assert p.returncode in (130, -signal.SIGINT, 0), (p.returncode, err)
    if p.returncode != 0:
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "edgesim: interrupted"
    _check_user_files(out)
    _check_whole(out)


def test_kill_9_at_random_moments_then_a_clean_rerun(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _user_files(out)
    rng = random.Random(7)
    for _ in range(2):
        p = _run(*COMPILE, "-o", str(out), "--force", cwd=tmp_path)
        time.sleep(rng.uniform(0.5, 5.0))
        p.kill()
        p.communicate(timeout=60)
        _check_user_files(out)
        names = {x.name for x in out.iterdir()}
        if "report.json" in names:
            json.loads((out / "report.json").read_text())
    p = _run(*COMPILE, "-o", str(out), "--force", cwd=tmp_path)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    _check_user_files(out)
    _check_whole(out)  # stale staging folders of the killed runs are gone


def test_two_concurrent_compiles_never_interleave(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runs = [_run(*COMPILE, "--target", t, "-o", str(out), cwd=tmp_path) for t in ("rpi5", "rpi4")]
    done = [(p.returncode, *p.communicate(timeout=300)) for p in runs]
    codes = sorted(p.returncode for p in runs)
    refused = [err for p, (_, _, err) in zip(runs, done) if p.returncode == 2]
    if codes == [0, 2]:  # they overlapped: the second was refused before writing anything
        assert "another edgesim run" in refused[0]
        models = sorted(x.name for x in out.glob("model.*.onnx"))
        assert len(models) == 1
        report = json.loads((out / "report.json").read_text())
        assert models == [f"model.{report['target']}.onnx"]
    else:  # one finished before the other started: both complete, each whole
        assert codes == [0, 0], done
        assert len(list(out.glob("model.*.onnx"))) == 2
    _check_whole(out)


def test_an_atomic_write_error_names_the_destination_not_the_temporary(tmp_path: Path) -> None:
    # before: "No such file or directory: '.../.x.onnx.k2j3.tmp'" -- a hidden name the user
    # never gave; now the error names the path they asked for, and nothing is left behind
    missing = tmp_path / "no-such-folder" / "x.onnx"
    with pytest.raises(FileNotFoundError) as e:
        atomic_write(missing, b"data")
    assert e.value.filename == str(missing)
    folder = tmp_path / "taken"
    (folder / "inside").mkdir(parents=True)  # a folder where the file should go
    with pytest.raises(OSError) as e:
        atomic_write(folder, b"data")
    assert e.value.filename == str(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no .tmp left
    assert [p.name for p in folder.iterdir()] == ["inside"]
