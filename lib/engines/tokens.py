"""Output-token counts from the server's own tokenizer, for streams that carried none.

llama-cpp-python's server (0.3.x) streams no `usage` and no `timings`, so without this
its lanes have no token count and no throughput. The fallback of
reference/engine_apis.md §2.10 is to tokenize the generated text with the model's
tokenizer; asking the server itself uses exactly the tokenizer that served the model
and needs nothing installed here. Routes, as the servers define them:

- llama-cpp-python: `POST /extras/tokenize/count {"input", "model"}` → `{"count"}`
  (`llama_cpp/server/app.py`). It tokenizes with `add_bos=True`, so the tokens it adds
  to any text are measured once per model (the count of "") and subtracted.
- llama.cpp `llama-server`: `POST /tokenize {"content"}` → `{"tokens": [...]}`
  (`add_special` defaults to false).
- vLLM: `POST /tokenize {"model", "prompt", "add_special_tokens": false}` → `{"count"}`
  (`add_special_tokens` defaults to true there).

The count is of the re-tokenized text, not of the generated token ids: it can differ
(a generated sequence need not be the tokenizer's own segmentation of its text, and an
end-of-sequence token leaves no text; the sandbox's random tiny model gave 23-30 for 24
generated). The adapter caps it at the request's max_tokens, which no server exceeds.
Records say so with token_source "server-tokenizer".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

TOKEN_SOURCE = "server-tokenizer"

# Statuses that mean "this server has no such route / does not speak this body": the
# route is not tried again. Anything else (5xx, auth, timeouts) fails one request only.
_ABSENT = frozenset({400, 404, 405, 422, 501})


@dataclass(frozen=True)
class Route:
    """One server's tokenize endpoint: how to ask, how to read the answer."""

    name: str
    path: str
    body: Callable[[str, str], dict[str, Any]]  # (model, text) → JSON body
    count: Callable[[Any], int | None]  # JSON answer → token count
    adds_special: bool = False  # the server adds BOS/EOS we cannot switch off


def _count_field(data: Any) -> int | None:
    value = data.get("count") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tokens_len(data: Any) -> int | None:
    tokens = data.get("tokens") if isinstance(data, dict) else None
    return len(tokens) if isinstance(tokens, list) else None


ROUTES: dict[str, Route] = {
    "llama-cpp-python": Route(
        "llama-cpp-python",
        "/extras/tokenize/count",
        lambda model, text: {"input": text, "model": model},
        _count_field,
        adds_special=True,
    ),
    "llama.cpp": Route(
        "llama.cpp", "/tokenize", lambda model, text: {"content": text}, _tokens_len
    ),
    "vllm": Route(
        "vllm",
        "/tokenize",
        lambda model, text: {"model": model, "prompt": text, "add_special_tokens": False},
        _count_field,
    ),
}


def route_order(kind: str | None, server: str | None) -> list[str]:
    """Routes to try, the detected server's own first. A generic server gets all of
    them: a wrong route answers 4xx, or (llama.cpp given no `content`) zero tokens,
    which is refused below."""
    first = server if server in ROUTES else kind if kind in ROUTES else None
    rest = [name for name in ("vllm", "llama.cpp", "llama-cpp-python") if name != first]
    return [first, *rest] if first else rest


class _Absent(Exception):
    """The route does not exist on this server (or does not take this body)."""


class _Failed(Exception):
    """The route exists but this call failed (5xx, auth): try again next request."""


class ServerTokenizer:
    """Counts text with the server's tokenizer; remembers which route works.

    Once every route has been found absent, `count` returns None at once: a server
    without a tokenizer endpoint costs one probe per route, not one per request.
    """

    def __init__(self, http: httpx.AsyncClient, root: str) -> None:
        self._http, self._root = http, root
        self._route: Route | None = None
        self._absent: set[str] = set()
        self._special: dict[str, int] = {}  # model → tokens the route adds to any text

    @property
    def unsupported(self) -> bool:
        """True once every route answered that it does not exist here."""
        return self._route is None and self._absent >= set(ROUTES)

    async def count(
        self, model: str, text: str, order: Sequence[str], budget_s: float
    ) -> int | None:
        """Tokens in `text` by the server's tokenizer, or None (no route, or it failed)."""
        if not text or budget_s <= 0 or self.unsupported:
            return None
        try:
            async with asyncio.timeout(budget_s):
                if self._route is not None:
                    return await self._count_with(self._route, model, text)
                for name in order:
                    if name in self._absent:
                        continue
                    try:
                        n = await self._count_with(ROUTES[name], model, text)
                    except _Absent:
                        self._absent.add(name)
                        continue
                    if n is not None:
                        self._route = ROUTES[name]
                    return n
        except (TimeoutError, httpx.HTTPError, _Absent, _Failed):
            return None
        return None

    async def _count_with(self, route: Route, model: str, text: str) -> int | None:
        n = await self._ask(route, model, text)
        if n <= 0:
            # Non-empty text is at least one token: 0 means the body was not understood
            # (llama-server without `content` tokenizes nothing).
            raise _Absent(route.name)
        if route.adds_special:
            if model not in self._special:
                self._special[model] = await self._ask(route, model, "")
            n -= self._special[model]
        return n if n > 0 else None

    async def _ask(self, route: Route, model: str, text: str) -> int:
        response = await self._http.post(
            self._root + route.path, json=route.body(model, text), timeout=None
        )
        if response.status_code in _ABSENT:
            raise _Absent(route.name)
        if response.status_code != 200:
            raise _Failed(f"HTTP {response.status_code}")
        try:
            n = route.count(response.json())
        except ValueError:
            n = None
        if n is None:  # 200 but not this route's answer: another server's endpoint
            raise _Absent(route.name)
        return n
