"""Plain CPU cost calls memoise their glue (issue 17): per target on `CpuTarget.memo`, per
table and bit-choice set on `LayerTable.memo`. The results stay bit for bit those of a
from-scratch computation (the builders called on a fresh table and target, the kernel called
directly) and of a prepared call, on every zoo model, shipped CPU target, runtime and bit set,
cold and warm; the builders run once per target / table, and two targets never share rows."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from compiler.frontend import load
from compiler.ir import CATEGORY_GEMM, KIND_CODE
from edgesim import zoo
from hwmodels import configs, cpu, macarray, ort_layout, prepared, prepared_cpu
from hwmodels.cost import MEMO_ENTRIES, evaluate, memoised, memory_bytes
from hwmodels.cpu import LEGACY_RUNTIMES, RUNTIMES, CpuTarget
from hwmodels.kernels import cpu as kernel
from hwmodels.kernels import cpu_layout as K
from hwmodels.kernels.cpu_inserted import add_inserted
from hwmodels.macarray import MacArrayTarget
from hwmodels.target import list_targets, load_target
from tests.hwmodels.test_prepared_cpu import SMALL

BIT_SETS = (np.array([[8, 8]]), np.array([[4, 32], [32, 32]]),
            np.array([[32, 32], [16, 16], [8, 8], [4, 8], [3, 8], [2, 8], [1, 8], [8, 16]]))
CPUS = [n for n in list_targets() if isinstance(load_target(n), CpuTarget)]
FIELDS = ("cycles", "latency_s", "energy_pj_compute", "energy_pj_onchip", "energy_pj_dram",
          "bound", "util", "weight_bytes", "act_bytes")


# convs (dense, depthwise, residual), linear and matmul, embedding gathers, norms, attention
MODELS = ("digits_cnn", "mobilenet_v2", "minilm", "llama")


@pytest.fixture(scope="module", params=MODELS)
def table(request):
    return load(zoo.build(request.param, **SMALL.get(request.param, {}))).layer_table()


def from_scratch(table, bits, target, runtime, threads=None) -> dict[str, np.ndarray]:
    """The cost from the builders on a fresh table and target (empty memos), the kernel called
    directly, the Cost fields assembled here: the pre-memo glue, written out."""
    table, target = dataclasses.replace(table), dataclasses.replace(target)
    code, bits = {**RUNTIMES, **LEGACY_RUNTIMES}[runtime], np.asarray(bits, dtype=np.int64)
    store = cpu.weight_store_bytes(bits[:, 0], code)
    gemm = table.category == CATEGORY_GEMM
    other = table.w_bytes[~gemm & (table.kind_code != KIND_CODE["gather"])].sum()
    llc = K.LLC_RESIDENT * target.caches[-1].size_kib * 1024
    resident = (table.w_elems[gemm].sum() * store + other <= llc).astype(np.float64)
    out = np.empty((K.NO, 1, len(table), len(bits)))
    choice = cpu.layer_choices(table, bits, target, code).astype(np.int64)
    params, caches = cpu.params_row(target, threads)[None], cpu.cache_rows(target)[None]
    kernel.evaluate_serial(
        cpu.layer_array(table), np.column_stack([bits.astype(np.float64), store]),
        resident[None], choice[None], params, caches,
        cpu.path_table(target, code, runtime not in LEGACY_RUNTIMES)[None], code, out)
    if code == K.RUNTIME_ORT:  # the reorders / transposes onnxruntime inserts (ort_layout)
        add_inserted(ort_layout.inserted_table(table, choice, target)[None], params, caches, out)
    fields = dict(zip(FIELDS[:7], out[:7, 0]))
    emitted = (cpu.emitted_weight_bytes(table, bits, target) if code == K.RUNTIME_ORT
               else np.full(out.shape[2:], np.nan))
    fields["weight_bytes"] = np.where(np.isnan(emitted), out[K.O_WBYTES, 0], emitted)
    fields["weight_bytes"][table.w_repeat] = 0.0  # a shared constant is stored once
    fields["act_bytes"] = memory_bytes(table, bits)[1]
    fields["bound"] = fields["bound"].astype(np.int8)
    return fields


def assert_same(cost, want: dict[str, np.ndarray], what: str) -> None:
    for name in FIELDS:
        got = getattr(cost, name)
        assert got.dtype == want[name].dtype, f"{what} {name}"
        np.testing.assert_array_equal(got, want[name], err_msg=f"{what} {name}")


@pytest.mark.parametrize(("runtime", "threads"),
                         [(r, None) for r in sorted({**RUNTIMES, **LEGACY_RUNTIMES})]
                         + [("onnxruntime", 1)])
def test_memoised_calls_equal_a_from_scratch_computation(table, runtime, threads) -> None:
    for name in CPUS:
        target = load_target(name)
        wants = [from_scratch(table, bits, target, runtime, threads) for bits in BIT_SETS]
        for round_ in ("cold", "warm"):  # the second round reads every memo entry
            for bits, want in zip(BIT_SETS, wants):
                got = evaluate(table, bits, target, threads=threads, runtime=runtime)
                assert_same(got, want, f"{name} {runtime} {round_} {bits.tolist()}")
        for bits, want in zip(BIT_SETS, wants):
            call = prepared_cpu.prepare(table, bits, target, threads=threads, runtime=runtime)
            assert_same(prepared_cpu.run(call), want, f"{name} {runtime} prepared")


def test_configs_in_one_call_equal_each_config_alone() -> None:
    # evaluate_configs stacks H targets' memoised rows: row h is target h's own cost
    table = load(zoo.build("digits_cnn")).layer_table()
    targets = [load_target(n) for n in CPUS]
    many = cpu.evaluate_configs(table, BIT_SETS[2], targets)
    for h, target in enumerate(targets):
        want = from_scratch(table, BIT_SETS[2], target, "onnxruntime")
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(many, name)[h], want[name],
                                          err_msg=f"{target.name} {name}")


def _count(monkeypatch, names: tuple[str, ...]) -> dict[str, int]:
    calls = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(cpu, name)

        def counted(*args, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(*args, **kw)
        monkeypatch.setattr(cpu, name, counted)
    return calls


BUILDERS = ("path_table", "params_row", "cache_rows", "layer_array", "layer_choices",
            "emitted_weight_bytes", "weight_store_bytes")


def test_a_second_call_rebuilds_nothing(monkeypatch) -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    target, bits = load_target("rpi5"), np.array([[8, 8], [4, 32]])
    calls = _count(monkeypatch, BUILDERS)
    first = evaluate(table, bits, target)
    assert calls == dict.fromkeys(BUILDERS, 1)
    second = evaluate(table, bits.copy(), target)  # equal bits, another array
    assert calls == dict.fromkeys(BUILDERS, 1)
    np.testing.assert_array_equal(first.latency_s, second.latency_s)
    evaluate(table, bits, target, threads=1)  # one more parameter row, nothing else
    assert calls == {**dict.fromkeys(BUILDERS, 1), "params_row": 2}


def test_another_target_builds_its_own_rows(monkeypatch) -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    base, bits = load_target("rpi5"), np.array([[8, 8]])
    faster = dataclasses.replace(base, clock_ghz=base.clock_ghz * 2)
    calls = _count(monkeypatch, BUILDERS)
    slow, fast = evaluate(table, bits, base), evaluate(table, bits, faster)
    # per-target rows twice; the table's columns (clock-independent) once
    assert calls == {**dict.fromkeys(BUILDERS, 1), "path_table": 2, "params_row": 2,
                     "cache_rows": 2}
    assert fast.latency_s.sum() < slow.latency_s.sum()
    hz = [t.memo[("params", t.cores)][K.P_CLOCK_HZ] for t in (base, faster)]
    assert hz == [base.clock_ghz * 1e9, faster.clock_ghz * 1e9]


def _fresh_row(target: CpuTarget, key: tuple) -> np.ndarray:
    """What a memoised per-target row must be: built anew on a copy with an empty memo."""
    fresh = dataclasses.replace(target)
    if key[0] == "paths":
        return cpu.path_table(fresh, key[1], key[2])
    return cpu.params_row(fresh, key[1]) if key[0] == "params" else cpu.cache_rows(fresh)


def test_two_targets_never_share_rows() -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    targets = [load_target(n) for n in CPUS]
    for t in targets:
        evaluate(table, np.array([[8, 8]]), t)
    for i, t in enumerate(targets):
        for key, value in t.memo.items():
            np.testing.assert_array_equal(value, _fresh_row(t, key), err_msg=f"{t.name} {key}")
            for other in targets[i + 1:]:
                assert not any(np.shares_memory(value, v) for v in other.memo.values())


def test_table_arrays_are_read_only_copies_and_replace_starts_a_new_memo() -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    mine = np.array(table.m)  # writable, the caller's
    copy = dataclasses.replace(table, m=mine)
    assert not copy.m.flags.writeable and mine.flags.writeable
    mine[0] += 1  # the caller's array stays theirs; the table's does not move
    assert copy.m[0] == table.m[0]
    evaluate(table, np.array([[8, 8]]), load_target("rpi5"))
    assert table.memo and not copy.memo


def test_a_memo_keeps_at_most_its_bound_dropping_the_oldest() -> None:
    memo: dict = {}
    for key in range(MEMO_ENTRIES + 5):
        assert memoised(memo, key, lambda key=key: key * 2) == key * 2
    assert len(memo) == MEMO_ENTRIES and min(memo) == 5
    assert memoised(memo, 10, lambda: "not rebuilt") == 20


MACS = [n for n in list_targets() if isinstance(load_target(n), MacArrayTarget)]


def test_memoised_mac_array_calls_equal_a_from_scratch_computation(table) -> None:
    # the oracle: evaluate_configs on configs built anew, which memoises nothing
    for name in MACS:
        target = load_target(name)
        for bits in BIT_SETS:
            want = macarray.evaluate_configs(dataclasses.replace(table), bits,
                                             configs.from_targets([target]))
            for round_ in ("cold", "warm"):
                got = evaluate(table, bits, target)
                for field in FIELDS:
                    np.testing.assert_array_equal(getattr(got, field), getattr(want, field)[0],
                                                  err_msg=f"{name} {round_} {field}")


def test_mac_array_calls_prepare_once_per_target_and_bits(monkeypatch) -> None:
    table = load(zoo.build("digits_cnn")).layer_table()
    calls = []
    real = prepared.prepare
    monkeypatch.setattr(prepared, "prepare", lambda *a: calls.append(a[2].name) or real(*a))
    small, bits = load_target("systolic-16x16"), np.array([[8, 8]])
    big = dataclasses.replace(small, rows=small.rows * 2)
    for _ in range(2):
        first, second = evaluate(table, bits, small), evaluate(table, bits, big)
    assert calls == [small.name, big.name]  # each once; the second round only looks up
    assert second.cycles.sum() < first.cycles.sum()  # the bigger array's own call


def test_pickles_carry_no_memo_and_unpickled_copies_cost_the_same() -> None:
    table, target = load(zoo.build("digits_cnn")).layer_table(), load_target("rpi5")
    want = evaluate(table, np.array([[8, 8]]), target)
    assert table.memo and target.memo
    table2, target2 = pickle.loads(pickle.dumps((table, target)))
    assert "memo" not in vars(table2) and "memo" not in vars(target2)
    assert not table2.m.flags.writeable  # still read-only: its memo cannot go stale
    assert target2.token is not target.token
    got = evaluate(table2, np.array([[8, 8]]), target2)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
