"""`edgesim compile` of a decoder claims `-o DIR` as every compile does (README: a non-empty
folder edgesim did not make is refused before any work unless --force; nothing else in it is
touched). Oracle: the user's file's bytes before and after."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesim.cli import main

ARGS = ["compile", "zoo:tiny_lm", "--target", "rpi5", "--budget", "tok_s=2000", "--threads", "1"]


def test_a_users_folder_is_refused_and_left_alone(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    assert main([*ARGS, "-o", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err
    assert [p.name for p in mine.iterdir()] == ["report.md"]
    assert (mine / "report.md").read_text() == "my notes"


def test_force_adds_the_outputs_and_keeps_other_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main([*ARGS, "-o", str(mine), "--force", "-q"]) == 0
    names = {p.name for p in mine.iterdir()}
    assert {"tiny_lm.rpi5.onnx", "report.json", "report.md", "front.png", "notes.txt"} <= names
    assert not [n for n in names if n.startswith(".edgesim-staging")]
    assert (mine / "notes.txt").read_text() == "keep"
