"""Contracts of the one target-kind registry (`hwmodels.kinds`), each broken on purpose.

Issue 19: a broken import inside a kind's module used to show up as
"targets/cortex-m7.yaml: kind: must be one of ['cpu', 'macarray']", blaming the user's file.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from hwmodels import cost, kinds, target
from hwmodels.kinds import KindEntry, KindRegistryError
from hwmodels.target import TargetError, load_target, target_from_dict
from tests.hwmodels.test_cpu import linear, make_table


def test_target_and_cost_read_the_same_registry():
    assert kinds.kind_names() == ["cpu", "macarray", "mcu", "roofline"]
    assert sorted(target.TARGET_KINDS) == kinds.kind_names()
    for name in ("rpi5", "cortex-m7", "systolic-16x16"):
        t = load_target(name)
        assert type(t) is kinds.target_class(t.kind)
    models = {k: kinds.cost_model(load_target(n)).__module__
              for k, n in (("cpu", "rpi5"), ("mcu", "cortex-m7"), ("macarray", "systolic-16x16"))}
    assert models == {"cpu": "hwmodels.cpu", "mcu": "hwmodels.mcu",
                      "macarray": "hwmodels.macarray"}


def test_an_unknown_kind_is_the_users_error_naming_file_field_and_choices():
    with pytest.raises(TargetError) as info:
        target_from_dict({"kind": "npu", "name": "x"}, "targets/x.yaml")
    assert str(info.value) == ("targets/x.yaml: kind: must be one of ['cpu', 'macarray', 'mcu', "
                               "'roofline'], got 'npu'")


def test_a_missing_registry_entry_names_the_class_and_the_registry(monkeypatch):
    mcu_target = load_target("cortex-m7")
    monkeypatch.setattr(kinds, "KINDS", tuple(e for e in kinds.KINDS if e.kind != "mcu"))
    with pytest.raises(TypeError, match=r"no cost model for McuTarget: .*hwmodels/kinds.py"):
        cost.evaluate(make_table([linear(1, 8, 8)]), np.array([[8, 8]]), mcu_target)


def test_an_entry_naming_an_absent_class_is_an_internal_error(monkeypatch):
    monkeypatch.setattr(kinds, "KINDS", (KindEntry("mcu", "hwmodels.mcu", "McuTargett"),))
    with pytest.raises(KindRegistryError, match="module hwmodels.mcu has no 'McuTargett'"):
        target_from_dict({"kind": "mcu"}, "targets/m.yaml")


def test_a_kind_module_failing_to_import_is_an_internal_error_not_the_users_file(monkeypatch):
    monkeypatch.setitem(sys.modules, "hwmodels.mcu", None)  # import of hwmodels.mcu now fails
    with pytest.raises(KindRegistryError) as info:
        load_target("cortex-m7")
    assert not isinstance(info.value, TargetError)
    assert "target kind 'mcu': module hwmodels.mcu failed to import: ModuleNotFoundError" \
        in str(info.value)


def test_a_broken_import_inside_a_kind_module_names_the_missing_dependency(
        monkeypatch, tmp_path):
    (tmp_path / "npu_kind_under_test.py").write_text("import npu_tables_that_do_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = KindEntry("npu", "npu_kind_under_test", "NpuTarget")
    monkeypatch.setattr(kinds, "KINDS", kinds.KINDS + (entry,))
    with pytest.raises(KindRegistryError, match="npu_tables_that_do_not_exist") as info:
        target_from_dict({"kind": "npu"}, "targets/npu.yaml")
    assert "module npu_kind_under_test failed to import" in str(info.value)


def test_the_cpu_kinds_runtimes_are_the_cpu_models_runtimes():
    from hwmodels import cpu

    assert kinds.capabilities(load_target("rpi5")).runtimes == tuple(cpu.RUNTIMES)


def test_a_capability_naming_an_absent_function_is_an_internal_error(monkeypatch):
    mcu_entry = next(e for e in kinds.KINDS if e.kind == "mcu")
    broken = dataclasses.replace(mcu_entry, capabilities=kinds.Capabilities(
        memory_fit="hwmodels.mcu:check_fitt"))
    monkeypatch.setattr(kinds, "KINDS", tuple(broken if e is mcu_entry else e
                                              for e in kinds.KINDS))
    with pytest.raises(KindRegistryError, match="module hwmodels.mcu has no 'check_fitt'"):
        kinds.memory_fit(load_target("cortex-m7"))


def test_edgesim_asks_capabilities_never_kind_names():
    """No module of edgesim compares a string to a registered kind's name."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "edgesim"
    names = set(kinds.kind_names())
    found = [f"{f.relative_to(root.parent)}:{node.lineno}"
             for f in sorted(root.rglob("*.py")) if "zoo" not in f.parts
             for node in ast.walk(ast.parse(f.read_text()))
             if isinstance(node, ast.Compare) and any(
                 isinstance(x, ast.Constant) and x.value in names
                 for x in (node.left, *node.comparators))]
    assert found == []
