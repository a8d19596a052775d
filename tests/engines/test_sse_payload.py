"""SSE payloads parse as JSON the same whichever parser takes them (lib/engines/sse.py)."""

from __future__ import annotations

import json
import math

import pytest

from lib.engines.sse import parse_payload

CHUNK = (
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":'
    b'[{"index":0,"delta":{"content":"\xec\x95\x88\xeb\x85\x95"},"finish_reason":null}]}'
)


def test_a_chunk_parses_as_the_standard_library_parses_it():
    assert parse_payload(CHUNK) == json.loads(CHUNK.decode())
    assert parse_payload(CHUNK)["choices"][0]["delta"]["content"] == "안녕"


def test_what_only_the_standard_library_accepts_still_parses():
    # NaN and Infinity: valid for Python's json, refused by orjson.
    assert math.isnan(parse_payload(b'{"x": NaN}')["x"])
    assert parse_payload(b'{"x": [Infinity, 1]}')["x"] == [math.inf, 1]


@pytest.mark.parametrize("bad", [b"{not json", b'{"a": 1', b"\xff\xfe", b""])
def test_malformed_payloads_raise_value_error(bad):
    # The adapter words any ValueError as "malformed SSE data from server".
    with pytest.raises(ValueError):
        parse_payload(bad)
