"""Findings of a new user's run on trained models from PyPI packages (round 11, brief R):
each test failed before its fix. Driven through `edgesim.cli.main` in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesim import api
from edgesim.cli import main


def _refuse_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("the command started its work before checking -o")


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", [["quantize", "zoo:digits_cnn", "--bits", "8"],
                                     ["target", "probe"]])
def test_dash_o_onto_a_folder_is_refused_before_the_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    # before: quantize ran to the end, then failed on its hidden temporary file's name
    # ("edgesim: /tmp/.../.out.f0gt3_0s.tmp: Is a directory"), not the user's path
    monkeypatch.setattr(api, "quantize", _refuse_work)
    monkeypatch.setattr(api, "probe_target", _refuse_work)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert main([*command, "-o", str(folder)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"edgesim: {folder}: ") and "folder" in err, err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert (folder / "keep.txt").read_text() == "mine"


def test_dash_o_in_a_missing_folder_is_refused_before_the_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(api, "quantize", _refuse_work)
    out = tmp_path / "nope" / "q.onnx"
    assert main(["quantize", "zoo:digits_cnn", "--bits", "8", "-o", str(out)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"edgesim: {out}: ") and "does not exist" in err, err
    assert not (tmp_path / "nope").exists()
