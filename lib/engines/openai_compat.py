"""OpenAI-compatible endpoints (vLLM, llama.cpp, SGLang, TGI, LM Studio ...).

Streamed chats go out over one of two transports: `transport="aiohttp"`
(lib/engines/aio.py: aiohttp plus the byte-level SSE decoder of sse.py) or
`transport="httpx"` (lib/engines/sdk_stream.py: openai-python over httpx2, with the SSE
lines read there, or with the SDK's own stream objects for `parser="sdk"`).
BENCHMARKS.md ("Timing accuracy and client limits") has what each costs per chunk.
Everything that is not a streamed chat (model lists and their errors) goes through the
official client. What counts as output (TTFT rules, reference/engine_apis.md §2.10) is
in sse.py; token counts for streams that carry none come from the server's tokenizer
(tokens.py), asked after the request's timing is complete.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import httpx2
import openai

from lib.core.records import EngineInfo, ModelInfo, Prompt, RequestResult, Sampling
from lib.engines.base import EngineError, EngineUnreachable, ModelNotFound
from lib.engines.common import (
    META_TIMEOUT_S,
    POOL_SIZE,
    exc_text,
    guess_quantization,
    mark_send,
    one_line,
    openai_base,
    redact,
    root_of,
    send_clock,
    status_text,
)
from lib.engines.sdk_stream import stream_raw, stream_sdk, transport_text
from lib.engines.sse import (
    HTTPStatus,
    StreamError,
    StreamState,
    TransportFault,
)
from lib.engines.tokens import ROUTES, TOKEN_SOURCE, Route, ServerTokenizer, route_order

TRANSPORTS = ("aiohttp", "httpx")
DEFAULT_TRANSPORT = "aiohttp"  # BENCHMARKS.md: ~2× the chunks/s of httpx at ≤ 5 ms lag
# A server-tokenizer count may run this long past the request's own time limit: the
# runner waits timeout_s + 5 s (runner.TIMEOUT_GRACE_S) before it abandons a request.
COUNT_GRACE_S = 3.0
# Answers of a tokenize route that mean "no such route here (or not this body)", as in
# tokens.py; count_tokens then tries the next route, and returns None after the last.
_NO_ROUTE = frozenset({400, 404, 405, 422, 501})


def _never_read(exc: Exception, st: StreamState) -> bool:
    """True when the request failed on a connection the server closed without reading
    it: nothing came back (aiohttp says so in the fault; openai-python's connection
    error before any response, a timeout aside)."""
    if st.started:
        return False
    if isinstance(exc, TransportFault):
        return exc.unread
    return not isinstance(exc, openai.APITimeoutError)


def _status_text(exc: openai.APIStatusError) -> str:
    # The SDK passes the body's "error" member when there is one.
    return status_text(exc.body, exc.message)


class OpenAICompatEngine:
    """An OpenAI-compatible endpoint. `flavor` ("vllm", "llama.cpp", "openai") is
    detected by `info()` when not given; it decides which extensions are sent.
    `transport` ("aiohttp" or "httpx") carries streamed chats; `parser="sdk"` reads
    them with openai-python's stream objects (always over httpx2)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        flavor: str | None = None,
        parser: str = "raw",
        transport: str = DEFAULT_TRANSPORT,
        meta_timeout_s: float = META_TIMEOUT_S,
    ) -> None:
        if transport not in TRANSPORTS or parser not in ("raw", "sdk"):
            raise EngineError(f"unknown transport {transport!r} or parser {parser!r}")
        self.base_url = openai_base(base_url)
        self.root = root_of(self.base_url)
        self.flavor = flavor
        self.parser = parser
        self.transport = "httpx" if parser == "sdk" else transport
        self.meta_timeout_s = meta_timeout_s
        self._secret = api_key  # kept out of every error message (redact)
        limits = httpx2.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
        # No read limit on the client: each chat enforces its own total deadline.
        timeout = httpx2.Timeout(None, connect=meta_timeout_s)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key or "EMPTY",
            max_retries=0,  # silent retries would distort latency
            timeout=timeout,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=limits, timeout=timeout, event_hooks={"request": [mark_send]}
            ),
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(timeout=meta_timeout_s, headers=headers)
        self._info: EngineInfo | None = None
        self._tokenizer = ServerTokenizer(self._http, self.root)
        # count_tokens' own route memory: unlike chat's optional counts it must tell
        # "no tokenizer here" (None) from "the server failed" (an error).
        self._count_route: Route | None = None
        self._count_absent: set[str] = set()
        self._count_special: dict[str, int] = {}  # model → tokens the route adds to ""
        self._aio: Any = None
        self.resent = 0  # requests sent again: their connection was closed unread (_send)
        if self.transport == "aiohttp":
            # Imported here so that the httpx transport works without aiohttp installed.
            from lib.engines.aio import AioStreamer

            self._aio = AioStreamer(self.base_url, api_key, meta_timeout_s)

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        await self._client.close()
        await self._http.aclose()
        if self._aio is not None:
            await self._aio.aclose()

    # -- identity -----------------------------------------------------------------
    async def _get(self, path: str) -> httpx.Response | None:
        try:
            return await self._http.get(self.root + path)
        except httpx.HTTPError:
            return None

    async def _models_raw(self) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(self.meta_timeout_s):
                page = await self._client.models.list()
        except TimeoutError:
            raise EngineUnreachable(
                f"no answer from {self.base_url} in {self.meta_timeout_s:g} s"
            ) from None
        except openai.APIConnectionError as exc:
            raise EngineUnreachable(f"cannot connect to {self.base_url}: {exc_text(exc)}") from None
        except openai.APIStatusError as exc:
            text = f"GET {self.base_url}/models: HTTP {exc.status_code}: {_status_text(exc)}"
            raise EngineError(redact(text, self._secret)) from None
        except (openai.APIError, ValueError) as exc:
            text = f"GET {self.base_url}/models: {exc_text(exc)}"
            raise EngineError(redact(text, self._secret)) from None
        return [m.model_dump() | (m.model_extra or {}) for m in page.data]

    async def info(self) -> EngineInfo:
        """Identify the server: vLLM (/version + `vllm:` metrics), llama.cpp (/props
        build_info or owned_by "llamacpp"), llama-cpp-python, else generic "openai"."""
        if self._info is not None:
            return self._info
        models, version_r, props_r = await asyncio.gather(
            self._models_raw(), self._get("/version"), self._get("/props")
        )
        owners = {m.get("owned_by") for m in models}
        extra: dict[str, Any] = {"models": [m.get("id") for m in models]}
        version = _json_field(version_r, "version")
        props = _json(props_r)
        kind = "openai"
        if version is not None:
            metrics_r = await self._get("/metrics")
            has_vllm = metrics_r is not None and "vllm:" in metrics_r.text
            if has_vllm or "vllm" in owners:
                kind = "vllm"
        if kind == "openai" and (
            "llamacpp" in owners
            or (isinstance(props, dict) and ("build_info" in props or "total_slots" in props))
        ):
            kind = "llama.cpp"
            if isinstance(props, dict):
                version = props.get("build_info") or version
                extra |= {k: props[k] for k in ("total_slots", "model_path") if k in props}
                n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
                if n_ctx:
                    extra["n_ctx"] = n_ctx
        elif kind == "openai" and owners == {"me"}:
            # llama-cpp-python's server: a FastAPI app titled "llama.cpp Python API".
            api = _json(await self._get("/openapi.json"))
            title = (api or {}).get("info", {}).get("title", "") if isinstance(api, dict) else ""
            if "llama.cpp" in title:
                kind, version = "llama.cpp", api["info"].get("version")
                extra["server"] = "llama-cpp-python"
        self.flavor = self.flavor or kind
        self._info = EngineInfo(kind, "openai", self.base_url, version, extra)
        return self._info

    async def list_models(self) -> list[ModelInfo]:
        """Models from /v1/models, with context length and a best-effort quantization."""
        out = []
        for card in await self._models_raw():
            name = str(card.get("id"))
            meta = card.get("meta") if isinstance(card.get("meta"), dict) else {}
            root = card.get("root")
            quant, source = guess_quantization(root, name)
            extra = {k: card[k] for k in ("owned_by", "parent") if card.get(k) is not None}
            if meta:
                extra["meta"] = meta
            if quant:
                extra["quantization_source"] = source
            out.append(
                ModelInfo(
                    name=name,
                    quantization=quant,
                    context_length=card.get("max_model_len") or meta.get("n_ctx_train"),
                    digest=root or None,
                    size_bytes=meta.get("size"),
                    extra=extra,
                )
            )
        return out

    async def check_model(self, model: str) -> ModelInfo:
        """The model's info, or ModelNotFound naming what the endpoint serves."""
        models = await self.list_models()
        for m in models:
            if m.name == model:
                return m
        names = [m.name for m in models]
        shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
        raise ModelNotFound(
            f"model '{model}' not served at {self.base_url}; available: {shown or 'none'}"
        )

    # -- chat ---------------------------------------------------------------------
    async def _send(
        self, kwargs: dict[str, Any], extra_body: dict[str, Any], st: StreamState
    ) -> None:
        """Stream one chat through the chosen transport. A request whose connection the
        server had already closed is sent once more on a new one: llama-server closes its
        connection after each streamed answer without saying so, and a request that
        takes the connection back at once (the next user's, at the end of a stream)
        finds it closed before the server read a byte of it ("Server disconnected",
        "Can not write request body", "Connection reset"). Nothing came back, so nothing
        is counted twice; a server that is really gone fails the second try the same
        way, and that is what is reported."""
        try:
            await self._stream_once(kwargs, extra_body, st)
        except (TransportFault, openai.APIConnectionError) as exc:
            if not _never_read(exc, st):
                raise
            self.resent += 1
            await self._stream_once(kwargs, extra_body, st)

    async def _stream_once(
        self, kwargs: dict[str, Any], extra_body: dict[str, Any], st: StreamState
    ) -> None:
        if self.parser == "sdk":
            await stream_sdk(self._client, kwargs, st)
        elif self._aio is not None:
            body = {k: v for k, v in kwargs.items() if k != "extra_body"}
            await self._aio.stream(body | extra_body, st)
        else:
            await stream_raw(self._client, kwargs, st)

    async def chat(
        self,
        model: str,
        prompt: Prompt,
        sampling: Sampling,
        timeout_s: float,
        num_ctx: int | None = None,
    ) -> RequestResult:
        """Stream one chat completion and time it; never raises (errors → `error`).

        When the stream gave no token count, the server's tokenizer counts the output
        text after the timing is complete (token_source "server-tokenizer").
        `num_ctx` is an Ollama setting and is ignored here.
        """
        extra_body: dict[str, Any] = {}
        if sampling.ignore_eos:
            if self.flavor is None:
                try:
                    await self.info()
                except EngineError:
                    self.flavor = "openai"
            if self.flavor == "vllm":
                extra_body = {"ignore_eos": True, "min_tokens": sampling.max_tokens}
            elif self.flavor == "llama.cpp":
                # llama-server honours ignore_eos; llama-cpp-python (the sandbox) only
                # min_tokens. Each ignores the field it does not know.
                extra_body = {"ignore_eos": True, "min_tokens": sampling.max_tokens}
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": prompt.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "max_tokens": sampling.max_tokens,
        }
        if extra_body:
            kwargs["extra_body"] = extra_body
        st = StreamState()
        error: str | None = None
        t_call = time.perf_counter()
        try:
            with send_clock() as sent:
                async with asyncio.timeout(timeout_s):
                    await self._send(kwargs, extra_body, st)
        except TimeoutError:
            error = f"timed out after {timeout_s:g} s"
        except HTTPStatus as exc:
            error = str(exc)
            if exc.status == 404:
                error = f"model '{model}' not found (HTTP 404): {exc.message}"
        except TransportFault as exc:
            error = str(exc)
        except openai.APIStatusError as exc:
            error = f"HTTP {exc.status_code}: {_status_text(exc)}"
            if exc.status_code == 404:
                error = f"model '{model}' not found (HTTP 404): {_status_text(exc)}"
        except (StreamError, openai.APIError) as exc:
            if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
                error = transport_text(exc, st, self.base_url)
            else:
                error = f"server error mid-stream: {one_line(exc, 200)}"
        except httpx2.HTTPError as exc:
            error = transport_text(exc, st, self.base_url)
        except ValueError as exc:
            error = f"malformed SSE data from server: {exc_text(exc)}"
        except Exception as exc:  # never raise from chat: the runner counts every request
            error = f"{type(exc).__name__}: {exc_text(exc)}"
        t_done = time.perf_counter()
        if error is None and st.finish is None and not st.usage:
            # A finished stream says why it stopped or how much it made. Ollama 0.24 cuts
            # a repeating answer off with neither, and no [DONE] (tests/data/ollama-0.24.0).
            error = "stream ended without finish_reason or usage (the server cut the answer off)"
        if error:
            error = redact(error, self._secret)
        # t0: headers written (common.send_clock); before the call if never sent.
        result = self._result(st, sent[0] if sent else t_call, t_done, error)
        if result.output_tokens is None and error is None:
            # After t_done: the count never touches the request's timing.
            budget = t_call + timeout_s + COUNT_GRACE_S - time.perf_counter()
            text = "".join(st.other) + result.output_text
            if (n := await self._count_tokens(model, text, budget)) is not None:
                # Re-tokenized text can count more than was generated, never the server
                # more than max_tokens (sandbox llama-cpp-python: 29-30 for 24 generated).
                result.output_tokens = min(n, sampling.max_tokens)
                result.token_source = TOKEN_SOURCE
        return result

    async def _count_tokens(self, model: str, text: str, budget_s: float) -> int | None:
        """The server tokenizer's count of `text`, None when no route works."""
        if self._tokenizer.unsupported:
            return None
        if self._info is None:
            try:
                async with asyncio.timeout(max(min(budget_s, self.meta_timeout_s), 0.01)):
                    await self.info()
            except (EngineError, TimeoutError):
                pass
        kind = self._info.kind if self._info else self.flavor
        server = self._info.extra.get("server") if self._info else None
        try:
            return await self._tokenizer.count(model, text, route_order(kind, server), budget_s)
        except Exception:  # a count is optional: never fail a finished request for it
            return None

    # -- token counts ---------------------------------------------------------------
    async def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens in `text` by the server's tokenizer, without special tokens: vLLM
        `POST /tokenize {"model", "prompt", "add_special_tokens": false}` → `count`,
        llama-server `POST /tokenize {"content"}` → `tokens`, llama-cpp-python
        `POST /extras/tokenize/count` (minus what it adds to ""). The routes live at the
        server root, not under /v1 (tokens.py has their rules).

        None when no route exists here (each answered 404/405/...: asked once per
        engine, then None at once). Raises EngineUnreachable when nothing answers,
        ModelNotFound when a route refuses the model, EngineError for other failures.
        """
        if not text:
            return 0
        if self._count_route is None and self._count_absent >= set(ROUTES):
            return None
        if self._info is None:
            await self.info()  # which server this is decides the route tried first
        kind = self._info.kind if self._info else self.flavor
        server = self._info.extra.get("server") if self._info else None
        if self._count_route is not None:
            routes = [self._count_route]
        else:
            names = route_order(kind, server)
            routes = [ROUTES[n] for n in names if n not in self._count_absent]
        for route in routes:
            n = await self._tokenize(route, model, text)
            if n is None or n <= 0:
                # Non-empty text is at least one token: 0 means the body was not
                # understood (llama-server without `content` tokenizes nothing).
                self._count_absent.add(route.name)
                continue
            self._count_route = route
            if route.adds_special:
                if model not in self._count_special:
                    self._count_special[model] = await self._tokenize(route, model, "") or 0
                n -= self._count_special[model]
            return max(n, 0)
        return None

    async def _tokenize(self, route: Route, model: str, text: str) -> int | None:
        """One tokenize call: the count, None when the route is absent; raises
        EngineError subclasses for everything else."""
        url = self.root + route.path
        try:
            response = await self._http.post(url, json=route.body(model, text))
        except httpx.TimeoutException:
            raise EngineUnreachable(f"no answer from {url} in {self.meta_timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise EngineUnreachable(f"cannot connect to {url}: {exc_text(exc)}") from None
        body = _json_any(response)
        if response.status_code in _NO_ROUTE:
            message = status_text(body, response.reason_phrase)
            # vLLM answers a known route with 404 for an unknown model, naming it; a
            # missing route's 404 is the framework's "Not Found".
            if response.status_code == 404 and model and model in message:
                raise ModelNotFound(
                    redact(f"POST {url}: model '{model}' not found: {message}", self._secret)
                )
            return None
        if response.status_code != 200:
            text_ = f"POST {url}: HTTP {response.status_code}: "
            text_ += status_text(body, response.reason_phrase)
            raise EngineError(redact(text_, self._secret))
        try:
            return route.count(body)  # None: 200 but another server's answer
        except (TypeError, ValueError):
            return None

    @staticmethod
    def _result(st: StreamState, t_send: float, t_done: float, error: str | None) -> RequestResult:
        usage, timings = st.usage or {}, st.timings or {}
        out = usage.get("completion_tokens")
        if out is None:
            out = timings.get("predicted_n")
        prompt_tokens = usage.get("prompt_tokens")
        if prompt_tokens is None and "prompt_n" in timings:
            prompt_tokens = timings["prompt_n"] + timings.get("cache_n", 0)
        server: dict[str, Any] | None = None
        if timings or st.metrics:
            server = {**timings, **(st.metrics or {})}
        return RequestResult(
            t_send=t_send,
            t_done=t_done,
            chunk_times=st.times,
            t_first_reasoning=st.first_reasoning,
            t_first_answer=st.first_answer,
            output_text="".join(st.text),
            prompt_tokens=prompt_tokens,
            output_tokens=out,
            token_source="server" if out is not None else "none",
            finish_reason=st.finish,
            error=error,
            server=server,
        )


def _json(response: httpx.Response | None) -> Any:
    if response is None or response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _json_any(response: httpx.Response) -> Any:
    """The body as JSON whatever the status, else its text (for error messages)."""
    try:
        return response.json()
    except ValueError:
        return response.text


def _json_field(response: httpx.Response | None, key: str) -> Any:
    data = _json(response)
    return data.get(key) if isinstance(data, dict) else None
