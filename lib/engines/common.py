"""Helpers shared by the engine adapters: URLs, one-line errors, quantization hints."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lib.core.records import MAX_CONCURRENCY
from lib.engines.base import EngineError

# Connections per client: one per concurrent stream plus a few for probes, so a
# level at the maximum concurrency never waits on the pool (that wait would sit
# inside TTFT) and idle connections are kept for the next request.
POOL_SIZE = MAX_CONCURRENCY + 16
META_TIMEOUT_S = 10.0  # info, model lists and probes; chat has its own limit


def one_line(text: object, limit: int = 300) -> str:
    """Collapse whitespace and truncate: errors end up in table cells and logs."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret`: some servers quote a rejected API key in their error, and
    errors go to the store, logs and reports."""
    return text.replace(secret, "***") if secret and text else text


def exc_text(exc: BaseException) -> str:
    """A short reason for an exception: its message, else the first cause that has
    one (httpx's ReadError has none; its cause says "Connection reset by peer")."""
    generic = ("", "Connection error.", "Request timed out.")
    seen: BaseException | None = exc
    deepest = exc
    for _ in range(5):
        if seen is None:
            break
        text = str(seen).strip()
        if text not in generic:
            return one_line(text if seen is exc else f"{type(seen).__name__}: {text}", 200)
        deepest = seen
        seen = seen.__cause__ or seen.__context__
    return type(deepest).__name__


def status_text(body: Any, fallback: str | None = None) -> str:
    """The message of an HTTP error body: `{"error": {"message"}}` (OpenAI, vLLM,
    llama.cpp), `{"error": "..."}`, `{"detail": ...}` (FastAPI), else the text itself or
    `fallback` (the reason phrase). Bytes are decoded first."""
    if isinstance(body, bytes | bytearray):
        text = bytes(body).decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    msg: Any = body if isinstance(body, str) else None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        msg = msg or body.get("detail")
    return one_line(msg or fallback or "no message", 200)


def check_url(url: str) -> tuple[str, str]:
    """Validate an endpoint URL; return (root, path) with no trailing slash.

    Raises EngineError("invalid URL ...") for anything but http(s)://host[:port][/path].
    """
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise EngineError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise EngineError(f"invalid URL {url!r}: scheme must be http or https")
    if not parts.hostname:
        raise EngineError(f"invalid URL {url!r}: no host")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, "", "", "")), path


def root_of(url: str) -> str:
    """The server root of an OpenAI-style base URL: `http://h:8000/v1` → `http://h:8000`."""
    root, path = check_url(url)
    return root + path.removesuffix("/v1")


def openai_base(url: str) -> str:
    """Normalise an OpenAI-style base URL: a bare host gets `/v1` appended."""
    root, path = check_url(url)
    return root + (path or "/v1")


# HF-style quantization markers in repo / directory names.
_HF_QUANT = re.compile(
    r"(?<![a-z0-9])(awq|gptq(?:-int[48])?|fp8|int8|int4|w8a8|w4a16|bnb-4bit|nf4|mxfp4|nvfp4)"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)
# GGUF file types as they appear in file names (q4_k_m, Q8_0, IQ4_XS, f16, bf16).
_GGUF_TYPE = r"(i?q[1-8](?:_[a-z0-9]{1,2}){0,2}|bf16|f16|f32)"
_GGUF_QUANT = re.compile(rf"(?<![a-z0-9]){_GGUF_TYPE}(?![a-z0-9])", re.IGNORECASE)
# Without "gguf" in the name, only a type that ends it counts: Ollama tags
# (qwen2.5:7b-instruct-q4_K_M) and llama.cpp aliases (tiny-qwen2-q4_0).
_GGUF_TAIL = re.compile(rf"[-_.:]{_GGUF_TYPE}$", re.IGNORECASE)


def guess_quantization(*names: str | None) -> tuple[str | None, str | None]:
    """Best-effort quantization from a model's id / root / file name.

    Returns (quantization, derived_from). A local HF directory's config.json
    `quantization_config.quant_method` wins (vLLM derives its method from it); then
    GGUF file-type markers; then HF name markers (-AWQ, -GPTQ-Int4, -FP8).
    """
    for name in names:
        if name and (found := _local_quant(name)):
            return found
    for name in names:
        if not name:
            continue
        base = name.rsplit("/", 1)[-1]
        gguf = _GGUF_QUANT.search(base) if "gguf" in name.lower() else _GGUF_TAIL.search(base)
        if gguf:
            return gguf.group(1).upper(), f"name {base}"
        if m := _HF_QUANT.search(base):
            return m.group(1).upper().replace("-INT", "-Int"), f"name {base}"
    return None, None


def _local_quant(name: str) -> tuple[str, str] | None:
    try:
        config = Path(name).expanduser() / "config.json"
        if not config.is_file():
            return None
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    qc = data.get("quantization_config")
    method = qc.get("quant_method") if isinstance(qc, dict) else None
    if isinstance(method, str) and method:
        return method, f"{config} quantization_config.quant_method"
    if qc is None:
        # A Hugging Face model with no quantization_config is served unquantized
        # (unless vLLM was started with --quantization, which no API reveals).
        dtype = data.get("torch_dtype") or data.get("dtype")
        label = f"unquantized ({dtype})" if isinstance(dtype, str) else "unquantized"
        return label, f"{config} has no quantization_config"
    return None


# -- the send clock ---------------------------------------------------------------
# t0 is taken when the request's headers have been written to the socket, seen
# through httpcore's `trace` request extension (httpx transport) or aiohttp's
# `on_request_chunk_sent` trace (aiohttp_send_trace), rather than before the client call.
# Under concurrency a single asyncio client spends ~1 ms of CPU building each
# request (openai-python) and a burst of N requests queues behind each other's
# work; timed from the call, that client-side wait landed in TTFT (measured: 17 ms
# p50 at 32 concurrent streams against a server that received each request < 1 ms
# after its headers were written). bench/timing_accuracy.py has the figures.
_SEND_BOX: ContextVar[list[float] | None] = ContextVar("servescope_send_box", default=None)
_SENT_EVENT = "http11.send_request_headers.complete"


async def mark_send(request: Any) -> None:
    """httpx / httpx2 request event hook: trace this request when a send clock runs."""
    box = _SEND_BOX.get()
    if box is None:
        return

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name == _SENT_EVENT and not box:
            box.append(time.perf_counter())

    request.extensions["trace"] = trace


def aiohttp_send_trace() -> Any:
    """An aiohttp TraceConfig that feeds send_clock: the first request chunk is traced
    just before aiohttp writes request line, headers and body to the socket together.

    (`on_request_headers_sent` would be earlier than the write: aiohttp buffers the
    headers and, on Python < 3.12, writes them from a task that waits a loop turn.)
    """
    import aiohttp  # the aiohttp transport only

    async def sent(session: Any, ctx: Any, params: Any) -> None:
        box = _SEND_BOX.get()
        if box is not None and not box:
            box.append(time.perf_counter())

    config = aiohttp.TraceConfig()
    config.on_request_chunk_sent.append(sent)
    return config


@contextmanager
def send_clock() -> Iterator[list[float]]:
    """Within the block, requests made in this task record when their headers went out
    (`box[0]`, perf_counter seconds); empty when no request got that far."""
    box: list[float] = []
    token = _SEND_BOX.set(box)
    try:
        yield box
    finally:
        _SEND_BOX.reset(token)
