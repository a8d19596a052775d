"""The streamed chat over openai-python's own transport (httpx2): `transport="httpx"`.

Kept beside the aiohttp path (aio.py) for comparison. The official client builds and
sends the request; parser "raw" reads the SSE lines here and `json.loads` each payload
(openai-python's per-chunk pydantic models cost ~80 µs of CPU against ~11 µs for this),
parser "sdk" keeps the SDK's stream objects.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx2
import openai

from lib.engines.common import exc_text
from lib.engines.sse import StreamState, scan_chunk, scan_sdk_chunk


def transport_text(exc: BaseException, st: StreamState, base_url: str) -> str:
    """The one-line error for an httpx2 / openai-python connection fault."""
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return f"timed out: {exc_text(exc)}"
    if st.started:
        return f"connection lost mid-stream: {exc_text(exc)}"
    if _caused_by(exc, httpx2.ConnectError):
        return f"cannot connect to {base_url}: {exc_text(exc)}"
    # Connected, but the server closed before answering (e.g. it crashed).
    return f"no response from {base_url}: {exc_text(exc)}"


async def stream_raw(client: openai.AsyncOpenAI, kwargs: dict[str, Any], st: StreamState) -> None:
    """Send with the official client, read the SSE lines here (parser "raw")."""
    create = client.chat.completions.with_streaming_response.create
    async with create(**kwargs) as response:
        st.started = True
        lines = response.iter_lines()
        data: list[str] = []
        async for line in lines:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
                continue
            if line or not data:
                continue  # comments (":"), event:/id: fields, stray blank lines
            payload = "\n".join(data) if len(data) > 1 else data[0]
            data = []
            if payload.startswith("[DONE]"):
                # Read the body's end so the connection goes back to the pool.
                try:
                    async with asyncio.timeout(1.0):
                        async for _ in lines:
                            pass
                except TimeoutError:
                    pass
                return
            scan_chunk(json.loads(payload), time.perf_counter(), st)
        if data:
            payload = "\n".join(data)
            if not payload.startswith("[DONE]"):
                scan_chunk(json.loads(payload), time.perf_counter(), st)


async def stream_sdk(client: openai.AsyncOpenAI, kwargs: dict[str, Any], st: StreamState) -> None:
    """openai-python's own stream objects (parser "sdk")."""
    stream = await client.chat.completions.create(**kwargs)
    st.started = True
    try:
        async for chunk in stream:
            scan_sdk_chunk(chunk, time.perf_counter(), st)
    finally:
        await stream.close()


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
