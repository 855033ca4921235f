"""Target files: shipped YAMLs load and cite every number; bad files fail naming the field."""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from hwmodels.macarray import MacArrayTarget
from hwmodels.target import (
    TARGET_KINDS,
    TargetError,
    list_targets,
    load_target,
    validate_dataclass,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "targets").glob("*.yaml"))
GOOD = (ROOT / "targets" / "systolic-16x16.yaml").read_text()


def _numeric_leaves(node, path=""):
    """Dotted paths of every number in a parsed YAML document (sources excluded)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if path or key != "sources":
                yield from _numeric_leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numeric_leaves(value, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


def _citations_for(path):
    """The sources keys that may cite `path`: itself or an ancestor, with or without indices."""
    parts = path.replace("[", ".[").split(".")
    keys = set()
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end]).replace(".[", "[")
        keys |= {prefix, ".".join(p for p in parts[:end] if not p.startswith("["))}
    return keys


def test_the_two_mac_array_targets_ship():
    assert {"systolic-16x16", "sparse-mac-32x32"} <= set(list_targets())
    assert TARGET_KINDS["macarray"] is MacArrayTarget


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_target_loads_by_name_and_path(path):
    by_name, by_path = load_target(path.stem), load_target(str(path))
    assert by_name == by_path
    assert isinstance(by_name, TARGET_KINDS[yaml.safe_load(path.read_text())["kind"]])
    assert by_name.name == path.stem


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_number_in_a_shipped_target_has_a_source(path):
    raw = yaml.safe_load(path.read_text())
    sources = raw["sources"]
    leaves = list(_numeric_leaves(raw))
    assert leaves  # a target without numbers would pass vacuously
    uncited = [leaf for leaf in leaves if not _citations_for(leaf) & set(sources)]
    assert uncited == []
    assert all(cite.strip() for cite in sources.values())


def _write(tmp_path, text, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _error(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(TargetError) as info:
        load_target(path)
    return path, str(info.value)


@pytest.mark.parametrize("old, new, field, what", [
    ("rows: 16", "rows: -4", "rows", "must be > 0, got -4"),
    ("rows: 16", "rows: 0", "rows", "must be > 0, got 0"),
    ("rows: 16", "rows: '16'", "rows", "expected int, got str '16'"),
    ("rows: 16", "rows: 16.5", "rows", "expected int, got float 16.5"),
    ("rows: 16", "rows: true", "rows", "expected int, got bool True"),
    ("clock_ghz: 0.5", "clock_ghz: .nan", "clock_ghz", "must be finite, got nan"),
    ("dataflow: ws", "dataflow: rs", "dataflow", "must be one of ['os', 'ws', 'is'], got 'rs'"),
    ("double_buffered: true", "double_buffered: 1", "double_buffered", "expected bool, got int 1"),
    ("rows: 16", "rows: 16\nbanks: 4", "banks", "unknown field"),
    ("rows: 16\n", "", "rows", "missing"),
    ("{bits: 8, macs_per_pe_cycle: 1}", "{bits: 8, macs_per_pe_cycle: -2}",
     "precisions[0].macs_per_pe_cycle", "must be > 0, got -2"),
    ("{bits: 8, macs_per_pe_cycle: 1}", "{bits: 12, macs_per_pe_cycle: 1}",
     "precisions[0].bits", "must be one of"),
    ("  rows: ", "  row_count: ", "sources.row_count", "names no field of this target"),
    ("sparsity: none", "sparsity: structured\nsparsity_n: 4\nsparsity_m: 4", "sparsity_n",
     "must be < sparsity_m (4), got 4"),
])
def test_bad_field_is_named_with_file_and_path(tmp_path, old, new, field, what):
    assert old in GOOD
    path, message = _error(tmp_path, GOOD.replace(old, new, 1))
    assert message.startswith(f"{path}: {field}: {what}")


def test_error_names_a_nested_list_element_exactly(tmp_path):
    doc = GOOD.replace("  - {bits: 8, macs_per_pe_cycle: 1}",
                       "  - {bits: 8, macs_per_pe_cycle: 1}\n  - {bits: 4, macs_per_pe_cycle: -2}")
    path, message = _error(tmp_path, doc)
    assert message == f"{path}: precisions[1].macs_per_pe_cycle: must be > 0, got -2"


def test_unsafe_yaml_tags_are_refused(tmp_path):
    _, message = _error(tmp_path, "!!python/object/apply:os.system ['true']\n")
    assert "not valid YAML" in message


@pytest.mark.parametrize("text, field, what", [
    ("- 1\n- 2\n", "(top)", "expected a mapping, got list"),
    ("kind: gpu\n", "kind", "must be one of"),
    ("rows: [16\n", "(top)", "not valid YAML"),
])
def test_malformed_documents(tmp_path, text, field, what):
    path, message = _error(tmp_path, text)
    assert message.startswith(f"{path}: {field}: {what}")


def test_unknown_shipped_name_and_missing_file(tmp_path):
    with pytest.raises(TargetError, match="^target 'nope': no such shipped target"):
        load_target("nope")
    with pytest.raises(TargetError, match="cannot read"):
        load_target(str(tmp_path / "absent.yaml"))


def test_target_error_is_a_value_error_with_parts():
    err = TargetError("targets/x.yaml", "caches[1].size_kib", "must be > 0, got -4")
    assert isinstance(err, ValueError)
    assert str(err) == "targets/x.yaml: caches[1].size_kib: must be > 0, got -4"
    assert (err.file, err.field, err.what) == ("targets/x.yaml", "caches[1].size_kib",
                                               "must be > 0, got -4")


@dataclass(frozen=True)
class _Cache:
    size_kib: float
    latency_cycles: int = field(default=0, metadata={"ge": 0})


@dataclass(frozen=True)
class _Cpu:
    isa: tuple[str, ...]
    caches: tuple[_Cache, ...]
    boost_ghz: float | None = None


def test_generic_validation_of_other_shapes_of_dataclass():
    raw = {"isa": ["neon", "dotprod"], "caches": [{"size_kib": 64}, {"size_kib": 512,
                                                                     "latency_cycles": 0}]}
    cpu = validate_dataclass(_Cpu, raw, "", "t.yaml")
    assert cpu == _Cpu(("neon", "dotprod"), (_Cache(64.0), _Cache(512.0, 0)), None)
    assert isinstance(cpu.caches[0].size_kib, float)


@pytest.mark.parametrize("raw, message", [
    ({"isa": ["neon"], "caches": [{"size_kib": 64}, {"size_kib": -4}]},
     "targets/bad.yaml: caches[1].size_kib: must be > 0, got -4"),
    ({"isa": ["neon"], "caches": [{"size_kib": 64, "latency_cycles": -1}]},
     "targets/bad.yaml: caches[0].latency_cycles: must be >= 0, got -1"),
    ({"isa": "neon", "caches": []}, "targets/bad.yaml: isa: expected a list, got str"),
    ({"isa": [3], "caches": []}, "targets/bad.yaml: isa[0]: expected str, got int 3"),
    ({"isa": [], "caches": [7]}, "targets/bad.yaml: caches[0]: expected a mapping, got int"),
    ({"isa": [], "caches": [], "boost_ghz": 0}, "targets/bad.yaml: boost_ghz: must be > 0, got 0"),
])
def test_generic_validation_errors(raw, message):
    with pytest.raises(TargetError) as info:
        validate_dataclass(_Cpu, raw, "", "targets/bad.yaml")
    assert str(info.value) == message


def test_loaded_targets_are_frozen():
    target = load_target("systolic-16x16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.rows = 32


def test_variant_replaces_fields_and_cites_the_user():
    base, b0 = load_target("rpi4"), load_target("rpi4:clock_ghz=1.5,cores=2")
    assert (b0.clock_ghz, b0.cores) == (1.5, 2)
    assert b0.name == "rpi4:clock_ghz=1.5,cores=2"
    assert "set by the user" in b0.sources["clock_ghz"]
    # everything else is the shipped file's
    assert dataclasses.replace(b0, name=base.name, clock_ghz=base.clock_ghz, cores=base.cores,
                               sources=base.sources) == base


def test_variant_reaches_nested_fields():
    t = load_target("rpi5:dram.sustained_bandwidth_gbps=4.5")
    assert t.dram.sustained_bandwidth_gbps == 4.5
    assert t.dram.bandwidth_gbps == load_target("rpi5").dram.bandwidth_gbps


@pytest.mark.parametrize("spec, field, what", [
    ("rpi4:clock_ghz=-1", "clock_ghz", "must be > 0, got -1"),
    ("rpi4:cores=two", "cores", "expected int, got str 'two'"),
    ("rpi4:frequency=2", "frequency", "unknown field"),
    ("rpi4:clock_ghz.x=2", "clock_ghz.x", "variant names no nested field"),
])
def test_bad_variant_is_validated_like_a_file(spec, field, what):
    with pytest.raises(TargetError) as info:
        load_target(spec)
    assert str(info.value).startswith(f"targets/rpi4.yaml: {field}: {what}")


def test_variant_without_equals_sign_is_rejected():
    with pytest.raises(TargetError, match="expected key=value"):
        load_target("rpi4:clock_ghz")
