"""report.html: the compile report as one self-contained file (plots embedded as data URIs, no
scripts, no external links), written next to report.md for people who would rather look."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from typing import Any

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:small}td,th{border:1px solid #ccc;"
         "padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
         "img{max-width:100%}.warn{color:#b00;font-weight:bold}")
COLUMNS = ("layer", "kind", "bits w/a", "format", "MACs", "params", "sensitivity",
           "latency ms", "energy uJ", "bound")


def _inline(text: str) -> str:
    """Markdown bold of a summary line as HTML, everything else escaped."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def _summary(lines: list[str]) -> str:
    title = next((x[2:] for x in lines if x.startswith("# ")), "edgesim report")
    items = [f"<li{' class=warn' if 'WARNING' in x else ''}>{_inline(x[2:])}</li>"
             for x in lines if x.startswith("- ")]
    return f"<h1>{html.escape(title)}</h1><ul>{''.join(items)}</ul>"


def _row(x: Any) -> str:
    bits = "fp32" if (x.w_bits, x.a_bits) == (32, 32) else f"{x.w_bits}/{x.a_bits}"
    sens = "" if x.sensitivity is None else f"{x.sensitivity:.3g}"
    cells = (x.name, f"{x.kind}:{x.fn}" if x.fn else x.kind, bits, x.format, x.macs, x.params,
             sens, f"{x.latency_ms:.4f}", f"{x.energy_uj:.3f}", x.bound)
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def _image(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" ' \
           f'src="data:image/png;base64,{data}">'


def render(summary_lines: list[str], layers: Any, images: Mapping[str, bytes]) -> str:
    """The whole page: summary, the plots (`images`: title -> PNG bytes), the layer table."""
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = [_summary(summary_lines), *(_image(k, v) for k, v in images.items()),
            f"<h2>Layers</h2><table><tr>{head}</tr>{''.join(_row(x) for x in layers)}</table>"]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgesim report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
