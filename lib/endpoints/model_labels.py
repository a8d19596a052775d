"""How a model is labelled: table rows, pickers' labels, sizes and quantization hints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lib.core.records import ModelInfo
from lib.engines.common import guess_quantization as engine_guess_quantization


def model_rows(models: Sequence[ModelInfo]) -> list[dict[str, Any]]:
    """A table row per model: name, quantization, size, context length, digest."""
    rows = []
    for m in models:
        rows.append(
            {
                "model": m.name,
                "quantization": m.quantization or guess_quantization(m.name, m.digest),
                "parameters": m.parameter_size,
                "family": m.family,
                "context_length": m.context_length,
                "size_gb": round(m.size_bytes / 1e9, 2) if m.size_bytes else None,
                "size": size_label(m.size_bytes) if m.size_bytes else None,
                "digest": m.digest,
            }
        )
    return rows


def size_label(size_bytes: int) -> str:
    """'398 MB', '4.68 GB': decimal units as `ollama list` uses, three significant digits,
    so a 7 MB model does not read as 0.01 GB."""
    value = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        # Compare after rounding: 999.6 MB is "1 GB", not "1e+03 MB".
        if float(f"{value:.3g}") < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:,.3g} TB" if value < 1000 else f"{value:,.0f} TB"


def model_option(model: ModelInfo) -> str:
    """A model picker's label: 'qwen2.5-coder:0.5b · Q4_K_M · 398 MB'.

    Variants of one model differ only in quantization and size, so a bare name list
    hides the difference; parts that are unknown are left out.
    """
    row = model_rows([model])[0]
    parts = [model.name, row["quantization"], row["size"]]
    return " · ".join(p for p in parts if p)


def guess_quantization(*names: str | None) -> str | None:
    """The quantization a model's names (or local root) announce, e.g. AWQ or Q4_K_M.

    One rule for the whole tool (lib.engines.common): shown as a hint where an engine
    reports none, never recorded as a fact.
    """
    return engine_guess_quantization(*names)[0]
