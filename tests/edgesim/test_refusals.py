"""Requests compile and quantize refuse with one line and exit 2 (the CLI's oracle: its exit
code and message)."""

from __future__ import annotations

from tests.edgesim.test_cli import _one_line_error, edgesim


def test_unknown_target_names_itself_and_the_known_ones(tmp_path):
    # was "targets/rpi9.yaml: (top): no shipped target 'rpi9'": a file the user never named
    err = _one_line_error(edgesim("simulate", "zoo:digits_cnn", "--target", "rpi9"),
                          "target 'rpi9'", "rpi5", "cortex-m7")
    assert "(top)" not in err and "rpi9.yaml" not in err
