"""A sweep's `-o` folder may hold the user's own files: a `header.json` a sweep did not write
is refused, byte for byte untouched (oracle: the file's bytes before and after); a sweep's
own header of a run that stored no point is replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesim.errors import UserError
from edgesim.sweep.store import HEADER_NAME, RESULTS_NAME, ResultStore

HEADER = {"space": {"name": "s"}, "fingerprint": "f"}


@pytest.mark.parametrize("text", ['{"title": "my notes"}', "not json", "[1, 2]"])
def test_a_users_header_json_is_refused_and_kept(tmp_path: Path, text: str) -> None:
    (tmp_path / HEADER_NAME).write_text(text)
    with pytest.raises(UserError, match="not a sweep's header"):
        ResultStore.open(tmp_path, HEADER)
    assert (tmp_path / HEADER_NAME).read_text() == text
    assert not (tmp_path / RESULTS_NAME).exists()


def test_a_sweeps_header_without_points_is_replaced(tmp_path: Path) -> None:
    (tmp_path / HEADER_NAME).write_text(json.dumps({"header": {"space": {"name": "old"}}}))
    with ResultStore.open(tmp_path, HEADER):
        pass
    assert json.loads((tmp_path / HEADER_NAME).read_text()) == {"header": HEADER}
