"""Test configuration: tests import the repo's packages from the checkout they live in, and
the ONNX backend suite prints its per-op counts in the terminal summary."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BACKEND_REPORT = pytest.StashKey[dict]()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    counts = config.stash.get(BACKEND_REPORT, None)
    if not counts:
        return
    terminalreporter.write_sep("-", "ONNX backend node tests per claimed op")
    terminalreporter.write_line(f"{'op':24s} {'pass':>5s} {'unsup':>5s} {'fail':>5s}")
    for op, (ok, unsupported, failed) in sorted(counts.items()):
        terminalreporter.write_line(f"{op:24s} {ok:5d} {unsupported:5d} {failed:5d}")
    ok, unsupported, failed = (sum(c[i] for c in counts.values()) for i in range(3))
    terminalreporter.write_line(f"{'(op-case pairs)':24s} {ok:5d} {unsupported:5d} {failed:5d}")


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """Mark every test whose file reaches onnxruntime through its imports `ort` (ort_reach.py)."""
    from tests.ort_reach import module_name, ort_modules
    needs = ort_modules(ROOT)
    for item in items:
        path = Path(str(item.fspath))
        if path.is_relative_to(ROOT) and module_name(path, ROOT) in needs:
            item.add_marker(pytest.mark.ort)
