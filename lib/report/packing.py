"""Packed data for the HTML report: Plotly's bundle and the figures travel gzipped,
written 7 bits a character in <script> data blocks that the page's runner script
(lib/report/__init__.py) unpacks and inflates; the figures' numbers are rounded first.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

PACKED_TYPE = "application/x-servescope-gzip7"
# Characters the HTML parser would change or that could end a <script> early: NUL (turned
# into U+FFFD), CR (turned into LF) and "<". Each is written as U+0100 + its value.
_UNSAFE = (0x00, 0x0D, 0x3C)


def pack(data: bytes) -> str:
    """gzip `data` and write it 7 bits per character: ASCII (one UTF-8 byte each) but for
    the three characters a <script> cannot hold as they are, which take two. That is 8/7
    of the gzip size where base64 is 4/3: Plotly's bundle is 1.6 MB instead of 1.9 MB.
    The page's runner (lib/report/__init__.py) undoes it and inflates with DecompressionStream."""
    raw = np.frombuffer(gzip.compress(data, compresslevel=9, mtime=0), dtype=np.uint8)
    bits = np.unpackbits(raw)
    bits = np.concatenate([bits, np.zeros(-len(bits) % 7, dtype=np.uint8)]).reshape(-1, 7)
    values = bits.astype(np.uint32) @ (1 << np.arange(6, -1, -1, dtype=np.uint32))
    values = np.where(np.isin(values, _UNSAFE), values + 0x100, values).astype("<u4")
    return values.tobytes().decode("utf-32-le")


def unpack(text: str) -> bytes:
    """The bytes `pack` was given (as the page's runner reads them)."""
    values = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    values = np.where(values >= 0x100, values - 0x100, values).astype(np.uint8)
    bits = np.unpackbits(values[:, None], axis=1)[:, 1:].reshape(-1)
    whole = len(bits) // 8 * 8
    return gzip.decompress(np.packbits(bits[:whole]).tobytes())


def packed_block(element_id: str, data: bytes) -> str:
    """A <script> data block the browser never runs: `data`, packed."""
    return f'<script type="{PACKED_TYPE}" id="{element_id}">{pack(data)}</script>'


def _rounded(values: np.ndarray) -> list[Any]:
    """Floats to four significant digits of the largest (at least 0.1, at most 0.001):
    finer than a pixel on any axis they are drawn on, and a sixth of the bytes of full
    doubles. Whole numbers lose their '.0'; NaN and inf become null (gaps)."""
    if values.dtype.kind in "iub":
        return values.tolist()
    values = values.astype("float64")
    finite = np.isfinite(values)
    top = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    decimals = 1 if top == 0 else min(max(3 - math.floor(math.log10(top)), 1), 3)
    out: list[Any] = []
    for v, ok in zip(np.round(values, decimals).tolist(), finite.tolist(), strict=True):
        out.append(None if not ok else int(v) if v.is_integer() else v)
    return out


def _compact(node: Any) -> Any:
    """A trace (as Plotly's JSON) with typed arrays ({dtype, bdata}) and lists of floats
    turned into rounded lists: compressible text instead of base64 doubles."""
    if isinstance(node, dict):
        if "bdata" in node and "dtype" in node:
            arr = np.frombuffer(base64.b64decode(node["bdata"]), dtype=np.dtype(node["dtype"]))
            if node.get("shape"):
                rows = arr.reshape([int(x) for x in str(node["shape"]).split(",")])
                if rows.ndim != 2:
                    return node
                # customdata: each column has its own scale (concurrency, ms, index).
                cols = [_rounded(rows[:, j]) for j in range(rows.shape[1])]
                return [list(r) for r in zip(*cols, strict=True)]
            return _rounded(arr)
        return {k: _compact(v) for k, v in node.items()}
    if isinstance(node, list):
        if node and all(isinstance(v, float) for v in node):
            return _rounded(np.array(node, dtype="float64"))
        return [_compact(v) for v in node]
    return node


def figures_payload(figures: Sequence[go.Figure]) -> bytes:
    """The figures as one JSON document, {"template", "figures": [{data, layout}]}: the
    theme once (the runner puts it back into each layout), data rounded (`_compact`)."""
    out, template = [], None
    for fig in figures:
        spec = json.loads(fig.to_json())
        layout = spec.get("layout") or {}
        if "template" in layout:
            own = layout.pop("template")
            if template is None:
                template = own
            elif own != template:
                layout["template"] = own  # a figure with a theme of its own keeps it
        out.append({"data": [_compact(t) for t in spec.get("data") or []], "layout": layout})
    doc = {"template": template or {}, "figures": out}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
