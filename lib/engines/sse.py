"""What one OpenAI-style stream carried: output-bearing chunk times, text, counts.

TTFT rules (reference/engine_apis.md §2.10): the role-only opening chunk (vLLM content
"", llama.cpp content null), SSE comments and usage-only chunks (`choices == []`) carry
no output; non-empty content, reasoning / reasoning_content, tool calls, and an
empty-string content without a role (a token that decoded to "") do.

Each output chunk is also reasoning, answer or both: reasoning when its delta carries
`reasoning` (recent vLLM) or `reasoning_content` (older vLLM, llama.cpp, SGLang),
answer when it carries content or tool calls. An empty-string content beside reasoning
is not an answer; alone it is (a token that decoded to ""). StreamState keeps when the
first of each arrived (RequestResult.t_first_reasoning / t_first_answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from lib.engines.common import one_line


class StreamError(Exception):
    """An error object sent inside the stream (`data: {"error": ...}`)."""


class HTTPStatus(Exception):
    """The server answered the chat request with an HTTP error (aiohttp transport)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class TransportFault(Exception):
    """A connection fault, already worded as the request's one-line error. ``unread``:
    the server closed the connection before reading the request (nothing came back)."""

    def __init__(self, message: str, unread: bool = False) -> None:
        super().__init__(message)
        self.unread = unread


@dataclass
class StreamState:
    """Accumulates one stream: output-chunk times and text, the last usage, llama.cpp
    timings, vLLM per-request metrics and the finish reason."""

    times: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    # Generated text that is not answer text (reasoning, tool-call names and arguments):
    # kept only so that a server-tokenizer count covers every generated token.
    other: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    finish: str | None = None
    started: bool = False  # response headers arrived
    first_reasoning: float | None = None  # arrival of the first reasoning chunk
    first_answer: float | None = None  # arrival of the first content / tool-call chunk

    def output(self, now: float, answer: bool, reasoning: bool) -> None:
        """Note an output-bearing chunk arriving at `now`."""
        self.times.append(now)
        if reasoning and self.first_reasoning is None:
            self.first_reasoning = now
        if answer and self.first_answer is None:
            self.first_answer = now


def parse_payload(payload: bytes) -> Any:
    """One SSE `data` payload as JSON. orjson parses a chunk in a third of the standard
    library's time (~1.7 against ~5 µs here), which is most of what the client spends per
    chunk beyond reading it. What orjson refuses and the standard library takes (NaN,
    Infinity) still parses. (orjson reads an integer past 64 bits as a float; no count
    or id an engine sends comes near that.)
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        # str, not bytes: json.loads would first sniff the bytes' encoding.
        return json.loads(payload.decode())


def scan_chunk(obj: Any, now: float, st: StreamState) -> None:
    """Account for one parsed SSE payload (a dict) arriving at `now`."""
    if not isinstance(obj, dict):
        raise ValueError(f"unexpected SSE payload {one_line(obj, 60)}")
    if err := obj.get("error"):
        msg = err.get("message") if isinstance(err, dict) else err
        raise StreamError(one_line(msg or err, 200))
    if usage := obj.get("usage"):
        st.usage = usage
    if timings := obj.get("timings"):
        st.timings = timings  # llama.cpp
    if metrics := obj.get("metrics"):
        st.metrics = metrics  # vLLM --enable-per-request-metrics
    answer = thought = False
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if content:
            st.text.append(content)
            answer = True
        elif content == "" and not delta.get("role") and not reasoning:
            answer = True  # a token that decoded to ""
        if reasoning:
            st.other.append(str(reasoning))
            thought = True
        if calls := delta.get("tool_calls"):
            st.other.extend(_call_text(calls))
            answer = True
        if reason := choice.get("finish_reason"):
            st.finish = reason
    if answer or thought:
        st.output(now, answer, thought)


def scan_sdk_chunk(chunk: Any, now: float, st: StreamState) -> None:
    """`scan_chunk` for openai-python's ChatCompletionChunk objects."""
    extra = chunk.model_extra or {}
    if chunk.usage is not None:
        st.usage = chunk.usage.model_dump()
    if extra.get("timings"):
        st.timings = extra["timings"]
    if extra.get("metrics"):
        st.metrics = extra["metrics"]
    answer = thought = False
    for choice in chunk.choices:
        delta = choice.delta
        dx = delta.model_extra or {}
        reasoning = dx.get("reasoning") or dx.get("reasoning_content")
        if delta.content:
            st.text.append(delta.content)
            answer = True
        elif delta.content == "" and not delta.role and not reasoning:
            answer = True
        if reasoning:
            st.other.append(str(reasoning))
            thought = True
        if delta.tool_calls:
            st.other.extend(_call_text([c.model_dump() for c in delta.tool_calls]))
            answer = True
        if choice.finish_reason:
            st.finish = choice.finish_reason
    if answer or thought:
        st.output(now, answer, thought)


def _call_text(calls: Any) -> list[str]:
    """The generated parts of tool-call deltas: function names and argument text."""
    out: list[str] = []
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            out += [str(fn[k]) for k in ("name", "arguments") if fn.get(k)]
    return out


class SSEDecoder:
    """Server-sent events from raw body bytes: `feed` returns the `data` payloads of the
    events the bytes complete (multi-line data joined by "\n"); comments, `event:`,
    `id:` and `retry:` fields are skipped. Lines may end in LF, CRLF or CR
    (sse-starlette, behind llama-cpp-python, writes CRLF).

    Working on whole reads rather than one line per await is what keeps the aiohttp
    transport's per-chunk cost low: one read usually carries one whole event.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []
        self.fed = 0  # body bytes fed so far
        # Body offset at which each event of the last `feed` was complete, for dating
        # it by when those bytes came off the socket (aio.py). Exact for LF line ends;
        # with CRs (rewritten to LF first) the end of the read, which is never early.
        self.ends: list[int] = []

    def feed(self, raw: bytes) -> list[bytes]:
        start = self.fed - len(self._tail)  # body offset of buf[0]
        self.fed += len(raw)
        buf = self._tail + raw if self._tail else raw
        exact = b"\r" not in buf
        if exact:
            lines = buf.split(b"\n")
            self._tail = lines.pop()
        else:
            # A CR at the very end may be the first half of a CRLF: keep it for later.
            keep_cr = buf.endswith(b"\r")
            buf = (buf[:-1] if keep_cr else buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = buf.split(b"\n")
            self._tail = lines.pop() + (b"\r" if keep_cr else b"")
        out: list[bytes] = []
        ends: list[int] = []
        at = start
        for line in lines:
            at += len(line) + 1
            if not line:  # a blank line ends the event
                if self._data:
                    out.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    ends.append(at if exact else self.fed)
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        self.ends = ends
        return out

    def close(self) -> list[bytes]:
        """Payloads of an event the body ended without a blank line after."""
        if not (self._tail or self._data):
            self.ends = []
            return []
        fed = self.fed
        out = self.feed(b"\n\n")
        self.fed, self.ends = fed, [fed] * len(out)  # the padding is not body
        return out
