"""What one OpenAI-style stream carried: output-bearing chunk times, text, counts.

TTFT rules (reference/engine_apis.md §2.10): the role-only opening chunk (vLLM content
"", llama.cpp content null), SSE comments and usage-only chunks (`choices == []`) carry
no output; non-empty content, reasoning / reasoning_content, tool calls, and an
empty-string content without a role (a token that decoded to "") do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lib.engines.common import one_line


class StreamError(Exception):
    """An error object sent inside the stream (`data: {"error": ...}`)."""


@dataclass
class StreamState:
    """Accumulates one stream: output-chunk times and text, the last usage, llama.cpp
    timings, vLLM per-request metrics and the finish reason."""

    times: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    finish: str | None = None
    started: bool = False  # response headers arrived


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
    bearing = False
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            st.text.append(content)
            bearing = True
        elif content == "" and not delta.get("role"):
            bearing = True  # a token that decoded to ""
        if delta.get("reasoning") or delta.get("reasoning_content") or delta.get("tool_calls"):
            bearing = True
        if reason := choice.get("finish_reason"):
            st.finish = reason
    if bearing:
        st.times.append(now)


def scan_sdk_chunk(chunk: Any, now: float, st: StreamState) -> None:
    """`scan_chunk` for openai-python's ChatCompletionChunk objects."""
    extra = chunk.model_extra or {}
    if chunk.usage is not None:
        st.usage = chunk.usage.model_dump()
    if extra.get("timings"):
        st.timings = extra["timings"]
    if extra.get("metrics"):
        st.metrics = extra["metrics"]
    bearing = False
    for choice in chunk.choices:
        delta = choice.delta
        dx = delta.model_extra or {}
        if delta.content:
            st.text.append(delta.content)
            bearing = True
        elif delta.content == "" and not delta.role:
            bearing = True
        if dx.get("reasoning") or dx.get("reasoning_content") or delta.tool_calls:
            bearing = True
        if choice.finish_reason:
            st.finish = choice.finish_reason
    if bearing:
        st.times.append(now)
