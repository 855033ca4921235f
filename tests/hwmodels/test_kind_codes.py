"""The IR-kernel contract: kernels use the IR's kind and category codes, never copies of them.

Issue 19: inserting a kind in `compiler.ir.KINDS` once shifted the kernels' hand-copied codes,
so the MCU model costed norm layers as softmax with no test failing near the cause.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path
from types import MappingProxyType, ModuleType

import numpy as np

import compiler.ir as ir
import hwmodels.kernels
from tests.hwmodels.test_cpu import layer
from tests.hwmodels.test_mcu import mcu_cycles, simple_mcu

KERNELS = Path(hwmodels.kernels.__file__).parent


def kernel_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.iter_modules([str(KERNELS)])]
    return [importlib.import_module(f"hwmodels.kernels.{n}") for n in names]


def code_mismatches(name: str, namespace: dict, kind_code: dict) -> list[str]:
    """Each KIND_<kind> / CATEGORY_<x> int in `namespace` that disagrees with the IR, named."""
    bad = []
    for const, value in namespace.items():
        if const.startswith("KIND_") and isinstance(value, int):
            want = kind_code.get(const[5:].lower(), "no such kind in compiler.ir.KINDS")
            bad += [f"{name}.{const} = {value}, IR says {want}"] if value != want else []
        elif const.startswith("CATEGORY_") and isinstance(value, int):
            want = getattr(ir, const, "no such category in compiler.ir")
            bad += [f"{name}.{const} = {value}, IR says {want}"] if value != want else []
    return bad


def test_every_kernel_kind_and_category_constant_agrees_with_the_ir():
    bad, seen = [], set()
    for mod in kernel_modules():
        bad += code_mismatches(mod.__name__, vars(mod), dict(ir.KIND_CODE))
        seen |= {c for c in vars(mod) if c.startswith(("KIND_", "CATEGORY_"))}
    assert bad == []
    # the scan is not vacuous: the constants the CPU kernel branches on are found
    assert {"KIND_CONV", "KIND_SOFTMAX", "KIND_IDENTITY", "CATEGORY_GEMM"} <= seen


def test_no_kernel_writes_a_kind_or_category_code_as_a_literal():
    bad = []
    for path in KERNELS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Assign):
                continue
            targets = [t for tgt in node.targets
                       for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt])]
            names = [t.id for t in targets if isinstance(t, ast.Name)
                     and t.id.startswith(("KIND_", "CATEGORY_"))]
            literal = any(isinstance(n, ast.Constant) and isinstance(n.value, int)
                          for n in ast.walk(node.value))
            bad += [f"{path.name}:{node.lineno} {', '.join(names)}"] if names and literal else []
    assert bad == [], "kind/category codes must come from compiler.ir, not literals"


def fresh_load(module: str) -> ModuleType:
    """Execute a kernel module's source anew (not via sys.modules), reading the current IR."""
    path = KERNELS / f"{module.rsplit('.', 1)[1]}.py"
    spec = importlib.util.spec_from_file_location(f"_fresh_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_inserting_a_kind_moves_the_kernel_constants_and_copies_are_caught(monkeypatch):
    softmax_before, conv_before = ir.KIND_CODE["softmax"], ir.KIND_CODE["conv"]
    kinds = ("new_first_kind",) + ir.KINDS  # every code shifts by one
    shifted = {k: i for i, k in enumerate(kinds)}
    monkeypatch.setattr(ir, "KINDS", kinds)
    monkeypatch.setattr(ir, "KIND_CODE", MappingProxyType(shifted))
    # (the MCU kernel reads no kind code since it takes the exp count as a column)
    for name in ("hwmodels.kernels.cpu_layout", "hwmodels.kernels.mcu"):
        mod = fresh_load(name)
        assert code_mismatches(name, vars(mod), shifted) == []
    assert fresh_load("hwmodels.kernels.cpu_layout").KIND_SOFTMAX == softmax_before + 1
    # a hand-copied code, as the kernels had before issue 19, is reported with its name
    copied = {"KIND_SOFTMAX": softmax_before, "KIND_CONV": conv_before}
    assert code_mismatches("old_mcu", copied, shifted) == [
        f"old_mcu.KIND_SOFTMAX = {softmax_before}, IR says {softmax_before + 1}",
        f"old_mcu.KIND_CONV = {conv_before}, IR says {conv_before + 1}"]
    assert code_mismatches("m", {"KIND_SOFTMAXX": 7}, shifted) == [
        "m.KIND_SOFTMAXX = 7, IR says no such kind in compiler.ir.KINDS"]


def test_mcu_costs_exp_for_softmax_only_not_for_norm():
    # closed form on simple_mcu at int8: ops * 0.5 + (a_in + a_out) / 4 B/cycle + 1000 dispatch,
    # plus 30 exp cycles per output element for softmax alone
    rows = [layer("norm", ops=4000, a_in=1000, a_out=1000),
            layer("softmax", ops=4000, a_in=1000, a_out=1000)]
    cyc = mcu_cycles(rows, [(8, 8)], simple_mcu())
    base = 4000 * 0.5 + 2000 / 4 + 1000
    # numba's on-disk cache keys on the kernel file, not on compiler.ir: after editing KINDS,
    # compiled kernels keep the old codes until their cache is removed
    np.testing.assert_allclose(cyc[:, 0], [base, base + 1000 * 30], err_msg=STALE_HINT)


STALE_HINT = ("if compiler.ir.KINDS changed, numba's cache may hold the old kind codes: "
              "delete hwmodels/kernels/__pycache__/*.nbi and *.nbc")
