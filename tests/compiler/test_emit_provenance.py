"""The emitted model's provenance: edgesim's version is read from the installed package's
metadata (a file read each time) once per process, not once per field of every emit."""

from __future__ import annotations

from importlib import metadata

from compiler.emit import emit
from compiler.frontend import load
from edgesim import zoo


def test_version_metadata_is_read_once_for_many_emits(monkeypatch) -> None:
    import compiler.emit as emit_module

    calls: list[str] = []
    real = metadata.version

    def counted(name: str) -> str:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", counted)
    getattr(emit_module._version, "cache_clear", lambda: None)()  # a process's first read
    g = load(zoo.build("digits_cnn"))
    models = [emit(g, check=False) for _ in range(3)]
    assert calls == ["edgesim"]  # three emits, two fields each: six reads before
    for m in models:
        props = {p.key: p.value for p in m.metadata_props}
        assert m.producer_version == props["edgesim.version"] == real("edgesim")
