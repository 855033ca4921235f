"""Google's magika file-type classifier (package `magika`: int32 byte input [N, 2048], Conv +
MatMul, 214 content types). Evaluation files of known types are written here with the
standard library (source code, JSON, HTML, CSV, XML, Markdown, INI, SQL, shell, zip, gzip,
bzip2, tar, PNG via zlib, BMP, WAV); features follow magika 1.0's reader (first/last 4096
bytes stripped of whitespace, 1024 from each end, padding token 256). Metrics: top-1
agreement with fp32 and accuracy against the true types."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import struct
import tarfile
import wave
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgesim.evaluate import session, sqnr_db
from real_models import RealModel, extract

PACKAGE = "magika==1.0.3"
MODEL = "magika/models/standard_v3_3/"
WORDS = ("alpha beta gamma delta value count total index name user order item price date "
         "status result config data buffer node graph layer weight scale shape").split()
Rng = np.random.Generator


def _words(rng: Rng, n: int) -> list[str]:
    return [WORDS[i] for i in rng.integers(len(WORDS), size=n)]


def _python(rng: Rng) -> bytes:
    lines = ["import os", "import sys", ""]
    for w in _words(rng, int(rng.integers(3, 12))):
        lines += [f"def get_{w}(items, limit={int(rng.integers(9))}):",
                  f'    """Return the {w} of items."""',
                  f"    return [x for x in items if x.{w} > limit]", ""]
    lines += ['if __name__ == "__main__":', "    print(get_value(sys.argv))"]
    return "\n".join(lines).encode()


def _c(rng: Rng) -> bytes:
    body = [f"static int {w}_{i}(int *a, int n) {{\n    int s = 0;\n    for (int i = 0; i < n; i++)"
            f" s += a[i] * {i};\n    return s;\n}}\n" for i, w in enumerate(_words(rng, 6))]
    return ("#include <stdio.h>\n#include <stdlib.h>\n\n" + "\n".join(body)
            + "int main(void) { printf(\"%d\\n\", 0); return 0; }\n").encode()


def _shell(rng: Rng) -> bytes:
    cmds = [f'if [ -f "$HOME/{w}.txt" ]; then\n  echo "{w} found"\n  cp "$HOME/{w}.txt" /tmp/\nfi'
            for w in _words(rng, 5)]
    return ("#!/bin/bash\nset -euo pipefail\n" + "\n".join(cmds) + "\nexit 0\n").encode()


def _sql(rng: Rng) -> bytes:
    w = _words(rng, 8)
    return (f"CREATE TABLE {w[0]} (id INTEGER PRIMARY KEY, {w[1]} TEXT NOT NULL, {w[2]} REAL);\n"
            + "".join(f"INSERT INTO {w[0]} ({w[1]}, {w[2]}) VALUES ('{x}', {i}.5);\n"
                      for i, x in enumerate(w * 3))
            + f"SELECT {w[1]}, SUM({w[2]}) FROM {w[0]} GROUP BY {w[1]} ORDER BY 2 DESC;\n").encode()


def _records(rng: Rng) -> list[dict]:
    keys = _words(rng, 4)
    return [{k: (int(rng.integers(1000)) if j % 2 else str(rng.integers(1e6))) for j, k in
             enumerate(keys)} for _ in range(int(rng.integers(5, 60)))]


def _json(rng: Rng) -> bytes:
    return json.dumps({"version": 2, "records": _records(rng)}, indent=2).encode()


def _csv(rng: Rng) -> bytes:
    rows = _records(rng)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _xml(rng: Rng) -> bytes:
    items = "".join(f'  <item id="{i}"><name>{w}</name><value>{i * 3}</value></item>\n'
                    for i, w in enumerate(_words(rng, int(rng.integers(4, 40)))))
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<catalog>\n{items}</catalog>\n'.encode()


def _html(rng: Rng) -> bytes:
    paras = "".join(f"<p class=\"{w}\">The {w} of the <a href=\"/{w}.html\">{w}</a> page.</p>\n"
                    for w in _words(rng, int(rng.integers(3, 30))))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Report"
            f"</title></head>\n<body>\n<h1>Report</h1>\n{paras}</body>\n</html>\n").encode()


def _markdown(rng: Rng) -> bytes:
    parts = [f"## The {w} section\n\nThis part explains **{w}** and its `{w}()` helper.\n\n"
             f"- first point about {w}\n- second point\n" for w in _words(rng, 4)]
    return ("# Project notes\n\n" + "\n".join(parts)).encode()


def _ini(rng: Rng) -> bytes:
    return "".join(f"[{w}]\nenabled = true\npath = /etc/{w}.conf\nretries = {i}\n\n"
                   for i, w in enumerate(_words(rng, 5))).encode()


def _zip(rng: Rng) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(int(rng.integers(1, 4))):
            # a fixed date: writestr(name) stamps the current time, so files differed per call
            z.writestr(zipfile.ZipInfo(f"doc/{i}.txt", date_time=(2020, 1, 1, 0, 0, 0)),
                       _markdown(rng), zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _tar(rng: Rng) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for i in range(2):
            data = _python(rng)
            info = tarfile.TarInfo(f"src/mod{i}.py")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _image(rng: Rng) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(8, 64, size=2))
    y, x = np.mgrid[:h, :w]
    return ((x * rng.integers(1, 9) + y * rng.integers(1, 9)) % 256).astype(np.uint8)


def _png(rng: Rng) -> bytes:
    img = _image(rng)
    raw = b"".join(b"\x00" + row.tobytes() for row in img)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", img.shape[1], img.shape[0], 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _bmp(rng: Rng) -> bytes:
    img = np.repeat(_image(rng)[..., None], 3, axis=2)
    pad = (-img.shape[1] * 3) % 4
    rows = b"".join(r.tobytes() + b"\x00" * pad for r in img[::-1])
    head = struct.pack("<IiiHHIIiiII", 40, img.shape[1], img.shape[0], 1, 24, 0, len(rows),
                       2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(rows), 0, 0, 54) + head + rows


def _wav(rng: Rng) -> bytes:
    t = np.arange(int(rng.integers(2000, 20000))) / 16000
    tone = (8000 * np.sin(2 * np.pi * rng.uniform(100, 900) * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone.tobytes())
    return out.getvalue()


FILES: dict[str, Callable[[Rng], bytes]] = {
    "python": _python, "c": _c, "shell": _shell, "sql": _sql, "json": _json, "csv": _csv,
    "xml": _xml, "html": _html, "markdown": _markdown, "ini": _ini, "zip": _zip, "tar": _tar,
    "png": _png, "bmp": _bmp, "wav": _wav,
    "gzip": lambda rng: gzip.compress(_json(rng), mtime=0),
    "bzip": lambda rng: bz2.compress(_csv(rng)),
}


def features(content: bytes, beg: int = 1024, end: int = 1024, block: int = 4096) -> np.ndarray:
    """magika 1.0's input for one file: stripped ends, padded with 256."""
    head, tail = content[:block].lstrip(), content[-block:].rstrip()
    b = list(head[:beg]) + [256] * max(0, beg - len(head))
    e = [256] * max(0, end - len(tail)) + list(tail[-end:] if tail else b"")
    return np.array(b + e, np.int32)


def dataset(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """`n` files cycling through the types: features [n, 2048] and true labels."""
    rng = np.random.default_rng(seed)
    kinds = [list(FILES)[i % len(FILES)] for i in range(n)]
    return np.stack([features(FILES[k](rng)) for k in kinds]), kinds


def load(cache: Path, n_eval: int) -> RealModel:
    """The case: 64 calibration files, `n_eval` (at least one per type) evaluation files."""
    path = extract(PACKAGE, MODEL + "model.onnx", cache)
    space = json.loads(extract(PACKAGE, MODEL + "config.min.json", cache).read_text())
    labels = space["target_labels_space"]
    x, truth = dataset(max(n_eval, len(FILES)), seed=1)
    y = np.array([labels.index(t) for t in truth])

    def run(p: Path) -> np.ndarray:  # batch 1: edgesim's files compute batch 1
        sess = session(p)
        return np.concatenate([sess.run(None, {"bytes": x[i:i + 1]})[0] for i in range(len(x))])

    return RealModel(name="magika standard_v3_3 (file type, int32 bytes)", path=path,
                     calib={"bytes": dataset(64, seed=0)[0]},
                     metrics=("top-1 agreement with fp32", "accuracy vs true type",
                              "SQNR dB of probabilities vs fp32"), run=run,
                     score=lambda ref, got: _scores(ref, got, y))


def _scores(ref: np.ndarray, got: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, accuracy, and the SQNR of the class probabilities (all near 1.0 on
    easy files: the SQNR still separates the variants)."""
    return {"top-1 agreement with fp32": float(np.mean(ref.argmax(1) == got.argmax(1))),
            "accuracy vs true type": float(np.mean(got.argmax(1) == truth)),
            "SQNR dB of probabilities vs fp32": sqnr_db(ref, got)}
