"""Peer test suite: ONNX's own backend node tests, run through frontend + reference executor.

Every case whose ops are all claimed (`compiler.ops.SUPPORTED_ONNX_OPS`, plus `Constant`,
which the frontend lifts) is run; outputs must match ONNX's reference outputs with the
tolerances ONNX's backend runner uses (rtol 1e-3, atol 1e-7) and the same dtype. A claimed op
may refuse a variant only with a clean ModelError listed in KNOWN_UNSUPPORTED (with the
reason); anything else is a failure of that op. Per-op pass/unsupported/fail counts are
printed in the terminal summary.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import load
from compiler.ops import SUPPORTED_ONNX_OPS
from tests.compiler.onnx_backend_data import BackendCase, load_cases
from tests.conftest import BACKEND_REPORT

FRONTEND_OPS = frozenset({"Constant"})
# float inputs that define shapes or sampling grids (edgesim needs them constant)
SHAPE_INPUTS = {"Resize": (1, 2, 3)}

# case name -> why edgesim refuses it (a clean ModelError is expected, not a wrong answer)
KNOWN_UNSUPPORTED: dict[str, str] = {}


def _pinned(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple:
    """The backend tests feed axes, shapes and sizes as graph inputs; edgesim lowers models with
    static shapes, so integer/bool inputs and SHAPE_INPUTS become initializers with the test's
    values (the op still computes on them: they fold through the same forward rules)."""
    shape_inputs = {n.input[i] for n in model.graph.node
                    for i in SHAPE_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    pinned = {k: v for k, v in feeds.items() if v.dtype.kind in "iub" or k in shape_inputs}
    if not pinned:
        return model, feeds
    model = copy.deepcopy(model)
    kept = [vi for vi in model.graph.input if vi.name not in pinned]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in pinned.items())
    return model, {k: v for k, v in feeds.items() if k not in pinned}


def _run_case(case: BackendCase) -> tuple[str, str]:
    try:
        for all_feeds, refs in case.data_sets:
            model, feeds = _pinned(case.model, all_feeds)
            graph = load(model, {k: v.shape for k, v in feeds.items()})
            outs = run(graph, feeds)
            for name, ref in zip(graph.outputs, refs):
                got = outs[name]
                assert got.dtype == ref.dtype, f"{name}: dtype {got.dtype}, expected {ref.dtype}"
                np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-7, err_msg=name)
    except ModelError as e:
        if case.name in KNOWN_UNSUPPORTED:
            return "unsupported", str(e)
        return "fail", f"ModelError: {e}"
    except Exception as e:  # noqa: BLE001 - every other outcome is a failure to report
        return "fail", f"{type(e).__name__}: {str(e)[:300]}"
    if case.name in KNOWN_UNSUPPORTED:
        return "fail", "listed in KNOWN_UNSUPPORTED but passes: remove it from the list"
    return "pass", ""


@pytest.fixture(scope="session")
def backend_results(request: pytest.FixtureRequest) -> dict[str, tuple[frozenset, str, str]]:
    claimed = set(SUPPORTED_ONNX_OPS) | FRONTEND_OPS
    results = {c.name: (c.op_types, *_run_case(c))
               for c in load_cases() if c.op_types <= claimed}
    counts = {op: [0, 0, 0] for op in SUPPORTED_ONNX_OPS}
    for ops, status, _ in results.values():
        for op in ops & set(counts):
            counts[op][("pass", "unsupported", "fail").index(status)] += 1
    request.config.stash[BACKEND_REPORT] = counts
    return results


@pytest.mark.parametrize("op_type", SUPPORTED_ONNX_OPS)
def test_claimed_op_passes_onnx_backend_cases(op_type: str, backend_results: dict) -> None:
    mine = {n: r for n, r in backend_results.items() if op_type in r[0]}
    failures = [f"{n}: {msg}" for n, (_, status, msg) in sorted(mine.items()) if status == "fail"]
    assert not failures, f"{len(failures)}/{len(mine)} cases fail:\n" + "\n".join(failures)


def test_every_claimed_op_has_backend_cases(backend_results: dict) -> None:
    covered = {op for ops, _, _ in backend_results.values() for op in ops}
    untested = sorted(set(SUPPORTED_ONNX_OPS) - covered)
    # ops with no runnable case here are tested by their own CASES tables; list them honestly
    assert len(untested) <= len(SUPPORTED_ONNX_OPS) // 4, f"no backend cases for {untested}"
