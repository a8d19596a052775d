"""The aiohttp transport's own parts (lib/engines/aio.py, sse.SSEDecoder): SSE bytes split
at any point, event end offsets, and chunk times taken when the bytes were read."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from lib.core.records import Prompt, Sampling
from lib.engines import aio
from lib.engines.openai_compat import OpenAICompatEngine
from lib.engines.sse import SSEDecoder
from tests.conftest import Scripted
from tests.scripted import OpenAIServer

STREAM = (
    b": ping\n\n"
    b'data: {"a": 1}\n\n'
    b"event: message\nid: 7\ndata: first\ndata: second\n\n"
    b": keep-alive\n\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
EVENTS = [b'{"a": 1}', b"first\nsecond", b"no-space", b"[DONE]"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_sse_decoder_any_split_any_line_end(newline: bytes):
    raw = STREAM.replace(b"\n", newline)
    for cut in range(len(raw) + 1):  # every place a socket read can end
        decoder = SSEDecoder()
        got = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:]) + decoder.close()
        assert got == EVENTS, (cut, got)


def test_sse_decoder_byte_by_byte_and_unterminated_last_event():
    decoder = SSEDecoder()
    got = [p for byte in STREAM[:-2] for p in decoder.feed(bytes([byte]))]
    assert got == EVENTS[:-1]
    assert decoder.close() == [b"[DONE]"]  # the body ended without the blank line
    assert decoder.close() == []


def test_sse_decoder_event_ends_are_body_offsets():
    raw = STREAM
    expected = [
        raw.index(b"\n\n", raw.index(p)) + 2 for p in (b'{"a"', b"second", b"no-sp", b"[DONE]")
    ]
    for cut in range(len(raw) + 1):
        decoder = SSEDecoder()
        ends = []
        for part in (raw[:cut], raw[cut:]):
            decoder.feed(part)
            ends += decoder.ends
        assert ends == expected, cut
    # CR line ends are rewritten first: the event is dated by the end of its read.
    decoder = SSEDecoder()
    crlf = STREAM.replace(b"\n", b"\r\n")
    decoder.feed(crlf[:40])
    decoder.feed(crlf[40:])
    assert decoder.ends == [len(crlf)] * 3


@pytest.fixture
def server(scripted: Scripted) -> OpenAIServer:
    return scripted.openai(ttft_ms=30, gap_ms=500, comments=False)


async def test_chunk_time_is_when_its_bytes_were_read(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
):
    # Two streams' first content chunks reach the client while its loop is busy (a
    # 300 ms block spanning their due time, ~30 ms in: wide enough that a loaded
    # machine's scripted server still writes both inside it), so one loop turn reads
    # both sockets.
    # Parsing the first of them then takes 60 ms of client CPU. The other chunk keeps
    # the time its bytes were read, not the time the client got round to parsing it.
    slow: dict[str, float] = {}
    real_scan = aio.scan_chunk

    def scan(obj: Any, now: float, st: Any) -> None:
        content = any((c.get("delta") or {}).get("content") for c in obj.get("choices") or ())
        if content and not slow:
            time.sleep(0.06)  # the parse that holds up the other stream
            slow["end"] = time.perf_counter()
        real_scan(obj, now, st)

    monkeypatch.setattr(aio, "scan_chunk", scan)

    async def busy_loop() -> float:
        await asyncio.sleep(0.01)
        time.sleep(0.3)  # CPU-bound work elsewhere in the client
        return time.perf_counter()

    eng = OpenAICompatEngine(server.url)
    try:
        prompts = [Prompt.from_text(t) for t in ("a", "b")]
        results = await asyncio.gather(
            *(eng.chat("scripted-model", p, Sampling(max_tokens=2), 5) for p in prompts),
            busy_loop(),
        )
    finally:
        await eng.aclose()
    *chats, block_end = results
    recs = server.recorded("/v1/chat/completions")
    assert all(r.error is None for r in chats)
    assert all(rec.sent[0] < block_end for rec in recs), "premise: both written during the block"
    firsts = sorted(r.chunk_times[0] for r in chats)
    assert firsts[1] < slow["end"]  # dated by its read, before the slow parse ended
    by_prompt = sorted(recs, key=lambda rec: rec.body["messages"][0]["content"])
    for r, rec in zip(chats, by_prompt, strict=True):
        assert r.chunk_times[0] >= rec.sent[0]  # never earlier than the server wrote it
    assert eng._aio.stamped > 0
