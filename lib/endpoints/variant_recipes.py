"""Recipes for the variants running endpoints name: what a matrix may start itself.

Beside ``variants`` (an Ollama pull, the `vllm serve` command of a sibling, display
only): here the same variants become ``EngineRecipe`` values that a matrix starts, measures
and stops (lib/launch). Naming only: whether this machine can start one (its program on
the PATH, the operator's list) is the caller's check (``lib.launch.executables.resolve``).

- Ollama: every tag an Ollama lists. The recipe runs ``ollama serve`` on a free loopback
  port, so it sees the model store of the user who starts it, the one the user's own
  Ollama lists when that Ollama runs on this machine as the same user.
- vLLM: the model an endpoint serves now and its AWQ / GPTQ / FP8 / unquantized siblings
  (``variants.vllm_variants``), with the served context length and
  ``gpu_memory_utilization`` 0.9 so the cells stay comparable with the endpoint. A
  sibling in a local folder names a folder of the endpoint's machine: kept only when the
  endpoint runs on this one (loopback).

The vLLM recipes leave ``quantization`` unset: vLLM reads the method from the
checkpoint's config and picks its fastest kernel (``awq_marlin`` for an AWQ checkpoint),
while ``--quantization awq`` would force the slower one. The variant says what the
weights are. Pure functions: no probing, no Streamlit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from lib.core.recipes import OLLAMA, VLLM, EngineRecipe
from lib.core.records import ModelInfo
from lib.endpoints.model_labels import guess_quantization
from lib.endpoints.variants import validate_ollama_model, variant_source, vllm_variants

GPU_MEMORY_UTILIZATION = 0.9
UNQUANTIZED = "unquantized"
_LOOPBACK = frozenset(("127.0.0.1", "localhost", "::1"))
# A served model name kept as the cell's own: what a local vLLM was started with.
_SIMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")


def is_loopback(base_url: str) -> bool:
    """Whether an endpoint's URL is on this machine (127.0.0.1, localhost, ::1)."""
    try:
        host = (urlsplit(base_url).hostname or "").lower()
    except ValueError:
        return False
    return host in _LOOPBACK


def _is_path(model: str) -> bool:
    return model.startswith(("/", ".", "~"))


# --- Ollama ---------------------------------------------------------------------------


def tag_and_quantization(tag: ModelInfo | Mapping[str, Any]) -> tuple[str, str | None]:
    """A listed model's tag and quantization level, from a ModelInfo (a probe's models),
    a model row (``model_rows``) or an /api/tags entry; the level guessed from the tag
    when the listing gives none."""
    if isinstance(tag, ModelInfo):
        name, quant = tag.name, tag.quantization
    else:
        name = str(tag.get("model") or tag.get("name") or "")
        details = tag.get("details")
        quant = tag.get("quantization") or (
            details.get("quantization_level") if isinstance(details, Mapping) else None
        )
    name = name.strip()
    quant = str(quant).strip() if quant else None
    return name, quant or guess_quantization(name)


def ollama_recipes(tags: Iterable[ModelInfo | Mapping[str, Any]]) -> list[EngineRecipe]:
    """One recipe per tag an Ollama lists, in its order: engine "ollama", the tag as its
    model, its quantization level as the variant ("Q4_K_M"; empty when unknown), and
    ``ollama`` from the PATH. A name Ollama would refuse, or a repeat, is left out."""
    out: list[EngineRecipe] = []
    seen: set[str] = set()
    for tag in tags:
        name, quant = tag_and_quantization(tag)
        try:
            name = validate_ollama_model(name)
        except ValueError:
            continue
        if name in seen:
            continue
        seen.add(name)
        out.append(EngineRecipe(engine=OLLAMA, model=name, variant=quant or ""))
    return out


# --- vLLM -----------------------------------------------------------------------------


def _served_name(model: str) -> str:
    """What clients ask a started sibling for: a folder's name, or the repo id (as the
    Engines page's `vllm serve` commands name it)."""
    return model.rstrip("/").rsplit("/", 1)[-1] if _is_path(model) else model


def served_source(served: ModelInfo, base_url: str) -> str | None:
    """The repo id or folder that starts the served model again on this machine: a
    Hugging Face id anywhere; a local folder only when the endpoint runs here."""
    local = is_loopback(base_url)
    source = variant_source(served)
    if source is not None and _is_path(source) and not local:
        source = None
    if source is None and local:
        root = str(served.extra.get("root") or served.digest or "").rstrip("/")
        source = root if root and _is_path(root) else None
    return source


def current_quantization(served: ModelInfo, source: str) -> str | None:
    """The served model's quantization as ``vllm_variants`` reads it (AWQ, GPTQ-Int4…),
    else what the endpoint reported ("unquantized (bfloat16)"), else None."""
    guessed = guess_quantization(source) or (
        guess_quantization(served.quantization) if served.quantization else None
    )
    return guessed or served.quantization or None


def vllm_recipes(
    served: ModelInfo, base_url: str, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
) -> list[EngineRecipe]:
    """The served model itself, then its quantization siblings, as vLLM recipes: the repo
    (or folder) as model, the variant's label ("AWQ", "GPTQ-Int4", "FP8", "unquantized"),
    ``max_model_len`` from the served context length, ``vllm`` from the PATH. Only a repo
    id of Hugging Face's form, or a folder of a vLLM on this machine, becomes a model:
    nothing else an endpoint reports reaches a command line."""
    common: dict[str, Any] = {
        "engine": VLLM,
        "max_model_len": served.context_length or None,
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    out: list[EngineRecipe] = []
    source = served_source(served, base_url)
    local = is_loopback(base_url)
    if source is not None:
        current = current_quantization(served, source) or ""
        # The name clients ask for now when this machine's vLLM chose it; a name another
        # machine reports is not put on a command line here.
        own = local and _SIMPLE_NAME.fullmatch(served.name or "")
        name = served.name if own else _served_name(source)
        out.append(EngineRecipe(model=source, served_model=name, variant=current, **common))
    for sibling in vllm_variants(served, base_url, gpu_memory_utilization):
        if _is_path(sibling.model) and not local:
            continue  # a folder of the endpoint's machine, not of this one
        out.append(
            EngineRecipe(
                model=sibling.model,
                served_model=_served_name(sibling.model),
                variant=sibling.quantization or UNQUANTIZED,
                **common,
            )
        )
    return out
