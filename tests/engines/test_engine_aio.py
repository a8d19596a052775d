"""The aiohttp transport's own parts (lib/engines/aio.py, sse.SSEDecoder): SSE bytes split
at any point, event end offsets, and chunk times taken when the bytes were read."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
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
    # The first content chunk 100 ms after receipt: time for the client to read both
    # streams' opening chunks and then hold up its loop before either is written.
    return scripted.openai(ttft_ms=100, gap_ms=100, comments=False)


ATTEMPTS = 5  # scenarios tried before the machine is judged too loaded to stage one
SLOW_PARSE_S = 0.06


@dataclass
class Scenario:
    """One try of: two streams' first content chunks reach the client while its loop is
    held up, one loop turn reads both sockets, and parsing the first takes 60 ms."""

    reads: list[tuple[float, int]] = field(default_factory=list)  # (time, connection)
    opened: int = 0  # role chunks parsed: each stream is reading its body
    both_open: asyncio.Event = field(default_factory=asyncio.Event)
    held: tuple[float, float] = (0.0, 0.0)  # the loop held up, from .. to
    slow: tuple[float, float] | None = None  # the slow parse, from .. to

    def premise_failed(self, sent: list[float]) -> str | None:
        """Why this try did not stage the scenario (the machine was too slow at some
        step), or None. The chunks must be written while the loop was held up (so
        neither could be read before), and both sockets read after it and before the
        slow parse began (one turn read both; not a write that landed after the hold)."""
        start, end = self.held
        if not all(start < t < end for t in sent):
            return f"written at {sent} outside the hold {self.held}"
        assert self.slow is not None
        turn = {conn for t, conn in self.reads if end <= t < self.slow[0]}
        if len(turn) != 2:
            return f"{len(turn)} socket(s) read between the hold and the slow parse"
        return None


async def test_chunk_time_is_when_its_bytes_were_read(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
):
    # Two streams' first content chunks reach the client while its loop is held up, so
    # one loop turn reads both sockets. Parsing the first of them then takes 60 ms of
    # client CPU. The other chunk keeps the time its bytes were read, not the time the
    # client got round to parsing it. Each step of that depends on how soon this
    # machine runs the server and the client, so each try checks the scenario really
    # happened and a try where it did not is repeated.
    real_received = aio._StampedHandler.data_received
    real_scan = aio.scan_chunk

    def received(handler: aio._StampedHandler, data: bytes) -> None:
        run.reads.append((time.perf_counter(), id(handler)))
        real_received(handler, data)

    def scan(obj: Any, now: float, st: Any) -> None:
        deltas = [c.get("delta") or {} for c in obj.get("choices") or ()]
        if any("role" in d for d in deltas):
            run.opened += 1
            if run.opened == 2:
                run.both_open.set()
        elif any(d.get("content") for d in deltas) and run.slow is None:
            start = time.perf_counter()
            time.sleep(SLOW_PARSE_S)  # the parse that holds up the other stream
            run.slow = (start, time.perf_counter())
        real_scan(obj, now, st)

    monkeypatch.setattr(aio._StampedHandler, "data_received", received)
    monkeypatch.setattr(aio, "scan_chunk", scan)

    async def hold_loop() -> None:
        # Blocking work elsewhere in the client, from the moment both streams are
        # reading until the server has written both first content chunks: it lasts as
        # long as this machine needs, not a guessed 300 ms. time.sleep blocks the loop
        # but lets the server's thread (in this process) run and write.
        await asyncio.wait_for(run.both_open.wait(), 5)
        recs = server.recorded("/v1/chat/completions")[-2:]
        start = time.perf_counter()
        while not all(rec.sent for rec in recs) and time.perf_counter() < start + 2:
            time.sleep(0.001)
        run.held = (start, time.perf_counter())

    failed: list[str] = []
    for _ in range(ATTEMPTS):
        run = Scenario()  # what the hooks above see
        eng = OpenAICompatEngine(server.url)
        try:
            prompts = [Prompt.from_text(t) for t in ("a", "b")]
            *chats, _ = await asyncio.gather(
                *(eng.chat("scripted-model", p, Sampling(max_tokens=2), 5) for p in prompts),
                hold_loop(),
            )
        finally:
            await eng.aclose()
        assert all(r.error is None for r in chats)
        recs = sorted(
            server.recorded("/v1/chat/completions")[-2:],
            key=lambda rec: rec.body["messages"][0]["content"],
        )
        if why := run.premise_failed([rec.sent[0] for rec in recs]):
            failed.append(why)
            continue
        assert run.slow is not None
        for r, rec in zip(chats, recs, strict=True):
            # Dated by its read: after the loop came back, before the slow parse began
            # (dated by its parse, the chunk parsed second would come after it ended).
            assert run.held[1] <= r.chunk_times[0] < run.slow[0]
            assert r.chunk_times[0] >= rec.sent[0]  # never earlier than the server wrote it
        assert eng._aio.stamped > 0
        return
    pytest.fail(f"the scenario never happened in {ATTEMPTS} tries: {failed}")
