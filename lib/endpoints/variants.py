"""Quantization variants: pull another Ollama tag, or the `vllm serve` command for a sibling.

Beside the registry (lib/endpoints/registry.py): these act on one endpoint's models.
Commands built here are only ever displayed, never run.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from lib.core.records import ModelInfo
from lib.endpoints.keys import scrub
from lib.endpoints.model_labels import guess_quantization
from lib.endpoints.probing import run_sync

# --- Ollama: pull another variant -----------------------------------------------------

# Ollama model names: [host/][namespace/]model[:tag] (types/model/name.go): parts of
# letters, digits, '.', '-', '_', starting with a letter or digit; host may carry a port.
OLLAMA_NAME_RE = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,349}(?::[0-9]{1,5})?/)?"
    r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,79}/){0,2}"
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,79})?$"
)


def validate_ollama_model(name: str) -> str:
    """The stripped model name, or ValueError with one line when Ollama would reject it."""
    cleaned = (name or "").strip()
    if not cleaned:
        raise ValueError("Model tag is empty; for example qwen2.5:7b-instruct-q8_0.")
    if len(cleaned) > 350 or not OLLAMA_NAME_RE.match(cleaned):
        raise ValueError(
            f"{cleaned[:80]!r} is not an Ollama model name: use name[:tag] with letters,"
            " digits, '.', '-' and '_', for example qwen2.5:7b-instruct-q8_0."
        )
    return cleaned


@dataclass
class PullProgress:
    """Where a pull stands: the latest status line and bytes over all layers."""

    status: str
    completed: int = 0
    total: int = 0

    @property
    def fraction(self) -> float | None:
        """0..1 once any layer size is known; None before (e.g. 'pulling manifest')."""
        return min(1.0, self.completed / self.total) if self.total else None


def pull_progress(layers: dict[str, tuple[int, int]], event: Mapping[str, Any]) -> PullProgress:
    """Fold one /api/pull event into `layers` ({digest: (completed, total)}).

    `completed` may be missing on a layer's first line (engine_apis.md §1.4); once
    Ollama reports 'success' every layer is complete.
    """
    status = str(event.get("status") or "")
    digest = event.get("digest")
    if digest and event.get("total"):
        total = int(event["total"])
        done = int(event.get("completed") or layers.get(digest, (0, total))[0])
        layers[digest] = (min(done, total), total)
    if status == "success":
        for digest_, (_, total) in list(layers.items()):
            layers[digest_] = (total, total)
    return PullProgress(
        status=status,
        completed=sum(c for c, _ in layers.values()),
        total=sum(t for _, t in layers.values()),
    )


REGISTRY_HOST = "registry.ollama.ai"
# How Go reports a connection the Ollama server itself could not make (DNS, firewall,
# proxy): the pull fails on the server's side, so the fix is on that machine's network.
_NETWORK_FAILURE_RE = re.compile(
    r"no such host|server misbehaving|i/o timeout|connection refused|network is unreachable"
    r"|no route to host|TLS handshake timeout|Client\.Timeout exceeded"
    r"|temporary failure in name resolution|connection reset by peer",
    re.IGNORECASE,
)
# Go's url.Error: `Get "https://registry.ollama.ai/v2/...": dial tcp: ...`.
_GO_URL_HOST_RE = re.compile(r'\b(?:Get|Head|Post) "https?://([^/":\s]+)')


def pull_failure(reason: str, secret: str | None = None) -> str:
    """The one-line message for a failed pull, given what Ollama said.

    When the Ollama server could not reach its registry (no DNS, no route, a refused or
    timed-out connection) the raw Go error says nothing of what to do, so a hint comes
    first, naming the registry host; the raw reason follows it. Other reasons are kept.
    """
    raw = scrub(reason, secret)
    host = _GO_URL_HOST_RE.search(raw)
    about_registry = host is not None or REGISTRY_HOST in raw or "manifest" in raw
    if not (about_registry and _NETWORK_FAILURE_RE.search(raw)):
        return f"Pull failed: {raw}"
    hint = (
        f"the Ollama server cannot reach its registry ({host.group(1) if host else REGISTRY_HOST})"
        " from this machine: pull on a machine with internet access, or copy the model in"
    )
    return f"Pull failed: {hint}. Ollama said: {raw}"


def pull_model(
    base_url: str,
    model: str,
    api_key: str | None = None,
    on_progress: Any = None,
) -> PullProgress:
    """Pull `model` into the Ollama server at `base_url`, reporting each stream event.

    `on_progress(PullProgress)` is called in the caller's thread. Raises ValueError for
    a bad name and EngineError (one line, no key) when Ollama refuses or fails.
    """
    from lib.engines import make_engine
    from lib.engines.base import EngineError, EngineUnreachable

    name = validate_ollama_model(model)

    async def run() -> PullProgress:
        engine = make_engine("ollama", base_url, api_key=api_key)
        layers: dict[str, tuple[int, int]] = {}
        last = PullProgress("starting")
        try:
            async for event in engine.pull(name):
                if event.get("error"):
                    raise EngineError(f"pull {name}: {event['error']}")
                last = pull_progress(layers, event)
                if on_progress is not None:
                    on_progress(last)
        except EngineUnreachable as exc:
            # Ollama itself is out of reach, not its registry: no registry hint.
            raise EngineError(scrub(str(exc), api_key)) from None
        except EngineError as exc:
            raise EngineError(pull_failure(str(exc), api_key)) from None
        except Exception as exc:
            message = f"Pull failed: {type(exc).__name__}: {exc}"
            raise EngineError(scrub(message, api_key)) from None
        finally:
            with contextlib.suppress(Exception):
                await engine.aclose()
        if last.status != "success":
            raise EngineError(f"Pull of {name} ended without success (last: {last.status!r}).")
        return last

    return run_sync(run())


# --- vLLM: the command that would serve another variant ---------------------------------

# (label, repo-name suffix, quantization as guess_quantization names it). Qwen and many
# other publishers name their quantized repos <base>-AWQ, -GPTQ-Int4, -GPTQ-Int8, -FP8.
VLLM_VARIANTS: tuple[tuple[str, str, str | None], ...] = (
    ("AWQ (4-bit)", "-AWQ", "AWQ"),
    ("GPTQ-Int4", "-GPTQ-Int4", "GPTQ-Int4"),
    ("GPTQ-Int8", "-GPTQ-Int8", "GPTQ-Int8"),
    ("FP8", "-FP8", "FP8"),
    ("unquantized (BF16)", "", None),
)
_SUFFIX_RE = re.compile(
    r"[-_](?:awq|gptq[-_]?int[48]|gptq|fp8(?:[-_]dynamic)?|w4a16|w8a8|bnb[-_]4bit|int[48])$",
    re.IGNORECASE,
)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class VllmVariant:
    """Another quantization of the served model and the command that serves it."""

    label: str
    model: str  # Hugging Face repo id or local folder
    quantization: str | None
    argv: list[str]

    @property
    def command(self) -> str:
        """The argv quoted for a POSIX shell, for the user to copy (never run here)."""
        import shlex

        return shlex.join(self.argv)


def base_model_name(model: str) -> str:
    """The model without its quantization suffix: Qwen/Qwen2.5-7B-Instruct-AWQ → …-Instruct."""
    return _SUFFIX_RE.sub("", model.rstrip("/"))


def variant_source(served: ModelInfo) -> str | None:
    """The repo id or folder whose quantization siblings can be named, or None.

    A Hugging Face id (org/name) always can; a local folder only when its name ends in
    a quantization (…-AWQ): "/models/hf" says nothing about what its siblings are called.
    """
    root = str(served.extra.get("root") or served.digest or "")
    for candidate in (root, served.name):
        if candidate and _HF_ID_RE.match(candidate):
            return candidate
    if "/" in root and _SUFFIX_RE.search(root.rstrip("/")):
        return root.rstrip("/")
    return None


def vllm_variants(
    served: ModelInfo, base_url: str, gpu_memory_utilization: float = 0.9
) -> list[VllmVariant]:
    """The `vllm serve` commands for the siblings of the served model's quantization.

    `served` is the one model the endpoint serves (its `digest` or extra["root"] is
    vLLM's `root`: the --model path or repo id). The commands keep the port and the
    context length so a lane pointed at this endpoint stays comparable. Empty when the
    siblings cannot be named (see variant_source).
    """
    source = variant_source(served)
    if source is None:
        return []
    current = guess_quantization(source) or (
        guess_quantization(served.quantization) if served.quantization else None
    )
    base = base_model_name(source)
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = (parts.hostname or "").lower()
    except ValueError:
        port, host = 8000, ""
    out = []
    for label, suffix, quant in VLLM_VARIANTS:
        if quant == current:
            continue  # the one already served (None: unquantized or unknown)
        model = base + suffix
        if model == source:
            continue  # no suffix on the served name: the bare base is what runs now
        # A local folder is served under its folder name; a repo under its id.
        served_name = model.rsplit("/", 1)[-1] if model.startswith(("/", ".", "~")) else model
        argv = ["vllm", "serve", model, "--served-model-name", served_name]
        if served.context_length:
            argv += ["--max-model-len", str(served.context_length)]
        argv += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}", "--port", str(port)]
        if host in _LOOPBACK:
            argv += ["--host", "127.0.0.1"]  # keep a local server off the network
        out.append(VllmVariant(label=label, model=model, quantization=quant, argv=argv))
    return out
