"""The streamed chat POST over aiohttp: the adapter's fast path for reading many streams.

Why not openai-python here: with its default transport (httpx2 → httpcore → h11 over
anyio) one client process spends 40–60 µs of CPU per streamed chunk, mostly per socket
read inside httpcore; openai-python's own aiohttp extra still wraps every read in
httpx2's stream objects. aiohttp parses HTTP in C (llhttp) and hands over whatever
bytes arrived in one await, and lib/engines/sse.py's SSEDecoder splits them into
events, so a chunk costs a fraction of that (BENCHMARKS.md, "Timing accuracy and client
limits"). The request body is the same JSON openai-python would send; the official
client still does everything that is not a streamed chat (model lists, the `sdk`
parser).

t0 is when the request is handed to the socket: aiohttp's `on_request_chunk_sent`
trace fires immediately before it writes the request line, headers and body in one
write (common.send_clock; `on_request_headers_sent` fires before anything is written,
while the bytes may still wait a loop turn in a writer task).

A chunk's time is when its bytes came off the socket, not when this task got round to
parsing them: the connection's protocol notes the time of every read (_StampedHandler),
and each SSE event takes the time of the read that completed it. When many streams
deliver at once (256 streams in step: one event loop turn reads all 256 sockets, then
parses them one after another), parsing-time stamps put the last stream ~10 ms late;
read-time stamps are late only by the reads before it (a few µs each). If aiohttp's
internals ever change shape, chunks fall back to parse time (`stamped` stays 0).

Every aiohttp fault leaves here as sse.HTTPStatus or sse.TransportFault with its
final one-line text, so the adapter's error handling does not depend on the transport.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from lib.engines.common import POOL_SIZE, aiohttp_send_trace, exc_text, status_text
from lib.engines.sse import (
    HTTPStatus,
    SSEDecoder,
    StreamState,
    TransportFault,
    parse_payload,
    scan_chunk,
)

USER_AGENT = "servescope"
MAX_ERROR_BODY = 64 * 1024  # an error page is read for its message, never in full


class _StampedHandler(ResponseHandler):
    """aiohttp's client protocol, noting when each read of a watched body happened:
    `stamps` holds (perf_counter at the read, body bytes fed by then)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch: aiohttp.StreamReader | None = None
        self.stamps: list[tuple[float, int]] = []

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter()  # the transport has just read `data` from the socket
        super().data_received(data)
        if self.watch is not None:
            self.stamps.append((t, self.watch.total_bytes))


def _closed_before_read(exc: aiohttp.ClientError, st: StreamState) -> bool:
    """True when the connection was closed before the server read the request: nothing
    came back, and aiohttp saw the close while sending or before any response line."""
    if st.started:
        return False
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return True
    # A reset or a refused write on a connection that was open (not a failed connect):
    # the server closed it with the request unread.
    return isinstance(exc, aiohttp.ClientOSError) and not isinstance(
        exc, aiohttp.ClientConnectorError
    )


class _StampingConnector(aiohttp.TCPConnector):
    """A TCPConnector whose connections use _StampedHandler."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(getattr(self, "_factory", None), functools.partial):
            self._factory = functools.partial(_StampedHandler, loop=self._loop)


class AioStreamer:
    """One aiohttp session per engine, made on first use inside the running loop."""

    def __init__(self, base_url: str, api_key: str | None, connect_timeout_s: float) -> None:
        self.base_url = base_url
        self._url = base_url + "/chat/completions"
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": USER_AGENT,
            "Authorization": f"Bearer {api_key or 'EMPTY'}",
        }
        # No read limit: each chat enforces its own total deadline (asyncio.timeout).
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=None
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.trace_configs: list[aiohttp.TraceConfig] = []  # extra hooks (tests)
        self.stamped = 0  # events dated by their socket read (the rest: by parse time)

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # One connection per concurrent stream (common.POOL_SIZE), none per host cap.
            connector = _StampingConnector(limit=POOL_SIZE, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trace_configs=[*self.trace_configs, aiohttp_send_trace()],
                auto_decompress=False,
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        """Close the session (and its connections) if one was made."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def stream(self, body: dict[str, Any], st: StreamState) -> None:
        """POST `body` and account for its SSE stream in `st`; raise HTTPStatus for an
        HTTP error, TransportFault for a connection fault (``unread`` when the server
        closed the connection before reading the request), StreamError / ValueError for
        what the stream carried."""
        try:
            await self._post(json.dumps(body).encode(), st)
        except aiohttp.ClientError as exc:
            unread = _closed_before_read(exc, st)
            raise TransportFault(self._fault_text(exc, st), unread=unread) from exc

    async def _post(self, data: bytes, st: StreamState) -> None:
        async with self._session_now().post(
            self._url, data=data, headers=self._headers, allow_redirects=False
        ) as response:
            if response.status >= 400:
                raw = await response.content.read(MAX_ERROR_BODY)
                raise HTTPStatus(response.status, status_text(raw, response.reason))
            st.started = True
            proto = response.connection.protocol if response.connection else None
            if not isinstance(proto, _StampedHandler):
                await self._read(response.content, st, None)
                return
            proto.watch, proto.stamps = response.content, []
            try:
                await self._read(response.content, st, proto.stamps)
            finally:
                proto.watch = None

    async def _read(
        self, content: aiohttp.StreamReader, st: StreamState, stamps: list[tuple[float, int]] | None
    ) -> None:
        decoder = SSEDecoder()
        k = 0  # stamps before k cover bytes already dated
        while raw := await content.readany():
            now = time.perf_counter()
            payloads = decoder.feed(raw)
            for payload, end in zip(payloads, decoder.ends, strict=True):
                t = now
                if stamps is not None:
                    # The first read after which the event's bytes were all in.
                    while k < len(stamps) and stamps[k][1] < end:
                        k += 1
                    if k < len(stamps) and stamps[k][0] < now:
                        t = stamps[k][0]
                        self.stamped += 1
                if payload.startswith(b"[DONE]"):
                    await _drain(content)
                    return
                scan_chunk(parse_payload(payload), t, st)
        now = time.perf_counter()
        for payload in decoder.close():
            if not payload.startswith(b"[DONE]"):
                scan_chunk(parse_payload(payload), now, st)

    def _fault_text(self, exc: aiohttp.ClientError, st: StreamState) -> str:
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return f"timed out: {exc_text(exc)}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return f"cannot connect to {self.base_url}: {exc_text(exc.os_error)}"
        if st.started:
            if isinstance(exc, aiohttp.ClientPayloadError):
                # The body ended early. aiohttp words it as a transfer-length error
                # and names a reset only inside its message.
                how = "reset by peer" if "ConnectionResetError" in str(exc) else "closed by peer"
                return f"connection lost mid-stream: {how} before the body ended"
            return f"connection lost mid-stream: {exc_text(exc)}"
        # Connected, but the server closed before answering (e.g. it crashed).
        return f"no response from {self.base_url}: {exc_text(exc)}"


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read to the body's end after [DONE] so the connection goes back to the pool."""
    try:
        async with asyncio.timeout(1.0):
            while await content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass
