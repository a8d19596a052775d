"""Probing endpoints: what answers at each, its version and models, and the lines and
table rows the pages show for it. A probe never raises; its error is one scrubbed line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lib.core.records import ModelInfo
from lib.endpoints.keys import resolve_api_key, scrub
from lib.endpoints.model_labels import guess_quantization
from lib.endpoints.registry import Endpoint
from lib.endpoints.urls import normalize_url, redact_url, validate_url

T = TypeVar("T")


@dataclass
class EndpointStatus:
    """What a probe of one endpoint found."""

    endpoint: Endpoint
    reachable: bool
    engine: str | None  # "ollama", "vllm", "llama.cpp", "openai"
    api: str | None  # the dialect that answered: "ollama" or "openai"
    version: str | None
    models: list[ModelInfo] = field(default_factory=list)
    error: str | None = None  # one line, never contains the API key
    base_url: str = ""  # normalised; the URL a lane should use


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from code that already runs inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def probe_async(
    endpoint: Endpoint, timeout: float = 3.0, api_key: str | None = None
) -> EndpointStatus:
    """Detect what answers at the endpoint and list its models; never raises."""
    try:
        from lib.engines import make_engine
        from lib.engines.base import EngineError, EngineUnreachable
        from lib.engines.detect import detect
    except ImportError as exc:  # adapters missing or broken: say so, do not raise
        return EndpointStatus(
            endpoint, False, None, None, None, [], scrub(f"Engine adapters: {exc}", None), ""
        )
    try:
        validate_url(endpoint.url)
    except ValueError as exc:
        return EndpointStatus(endpoint, False, None, None, None, [], str(exc), endpoint.url)
    base_url = normalize_url(endpoint.url)
    status = EndpointStatus(endpoint, False, None, endpoint.api, None, [], None, base_url)
    engine = None
    try:
        # Several requests go out (detection, version, models); bound the whole probe.
        async with asyncio.timeout(timeout * 3 + 1):
            if endpoint.api:
                engine = make_engine(endpoint.api, base_url, api_key=api_key)
                info = await engine.info()
            else:
                info = await detect(base_url, api_key=api_key, timeout=timeout)
                engine = make_engine(info.api, info.base_url, api_key=api_key)
            status.reachable, status.engine, status.api = True, info.kind, info.api
            status.version, status.base_url = info.version, info.base_url or base_url
            status.models = list(await engine.list_models())
            if not status.models:
                status.error = "The endpoint answers but serves no models."
    except TimeoutError:
        status.error = f"No answer within {timeout * 3 + 1:g} s."
    except EngineUnreachable as exc:
        status.reachable = False
        status.error = scrub(str(exc), api_key)
    except EngineError as exc:
        status.error = scrub(str(exc), api_key)
    except Exception as exc:  # a probe must never take the page down
        status.error = scrub(f"{type(exc).__name__}: {exc}", api_key)
    finally:
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.aclose()
    return status


def probe(
    endpoint: Endpoint, timeout: float = 3.0, secrets: Mapping[str, Any] | None = None
) -> EndpointStatus:
    """Probe one endpoint synchronously; never raises."""
    key = resolve_api_key(endpoint, secrets)
    return run_sync(probe_async(endpoint, timeout, key))


def probe_all(
    endpoints: Iterable[Endpoint],
    timeout: float = 3.0,
    secrets: Mapping[str, Any] | None = None,
) -> list[EndpointStatus]:
    """Probe every endpoint at once (in one event loop), in the given order."""
    eps = list(endpoints)

    async def run_all() -> list[EndpointStatus]:
        return list(
            await asyncio.gather(
                *(probe_async(ep, timeout, resolve_api_key(ep, secrets)) for ep in eps)
            )
        )

    return run_sync(run_all()) if eps else []


def status_rows(
    statuses: Sequence[EndpointStatus], secrets: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A table row per endpoint: where it is, what answers, how many models, key state.

    The key column names the variable and says whether it is set, never its value.
    """
    rows = []
    for s in statuses:
        e = s.endpoint
        key = None
        if e.api_key_env:
            found = resolve_api_key(e, secrets) is not None
            key = f"{e.api_key_env} ({'set' if found else 'not set'})"
        rows.append(
            {
                "name": e.name,
                "source": e.source,
                "url": redact_url(s.base_url or e.url),
                "reachable": s.reachable,
                "engine": s.engine,
                "version": s.version,
                "models": len(s.models),
                "api_key": key,
                "problem": s.error,
            }
        )
    return rows


def status_line(status: EndpointStatus) -> str:
    """'vllm 0.33.0 — 1 model', or 'down' when nothing usable answered."""
    if not status.reachable:
        return "down"
    n = len(status.models)
    what = f"{status.engine or 'engine'} {status.version or ''}".strip()
    return f"{what} — {n} model{'s' if n != 1 else ''}"


def served_line(model: ModelInfo) -> str:
    """What a one-model endpoint serves, in one line of plain text."""
    quant = model.quantization or guess_quantization(model.name, model.digest)
    line = f"Serves {model.name} · quantization {quant or 'not announced'}"
    line += f" · context {model.context_length or '?'} tokens"
    if model.digest and model.digest != model.name:
        line += f" · from {model.digest}"
    return line


def served_model(status: EndpointStatus) -> ModelInfo | None:
    """The one model an OpenAI-compatible endpoint serves (vLLM, llama.cpp), else None."""
    if status.api == "openai" and len(status.models) == 1:
        return status.models[0]
    return None
