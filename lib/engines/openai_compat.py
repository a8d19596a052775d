"""OpenAI-compatible endpoints (vLLM, llama.cpp, SGLang, TGI, LM Studio ...) via openai-python.

The official client builds and sends every request and maps HTTP errors to its
exception classes. The stream body is read as SSE lines and each `data:` payload is
`json.loads`-ed here: openai-python's per-chunk pydantic models cost ~80 µs of CPU per
chunk against ~11 µs for this (BENCHMARKS.md, "Timing accuracy and client limits"),
which halves what one client process can read and delays every chunk time under load.
`parser="sdk"` keeps the SDK's own stream objects for comparison. What counts as output
(TTFT rules, reference/engine_apis.md §2.10) is in lib/engines/sse.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import httpx2
import openai

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
)
from lib.engines.sse import StreamError, StreamState, scan_chunk, scan_sdk_chunk
from lib.records import EngineInfo, ModelInfo, Prompt, RequestResult, Sampling


def _status_text(exc: openai.APIStatusError) -> str:
    body = exc.body  # the SDK passes the body's "error" member when there is one
    msg: Any = body if isinstance(body, str) else None
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        msg = msg or body.get("detail")
    return one_line(msg or exc.message, 200)


class OpenAICompatEngine:
    """An OpenAI-compatible endpoint. `flavor` ("vllm", "llama.cpp", "openai") is
    detected by `info()` when not given; it decides which extensions are sent."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        flavor: str | None = None,
        parser: str = "raw",
        meta_timeout_s: float = META_TIMEOUT_S,
    ) -> None:
        self.base_url = openai_base(base_url)
        self.root = root_of(self.base_url)
        self.flavor = flavor
        self.parser = parser
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

    async def aclose(self) -> None:
        """Close both HTTP clients."""
        await self._client.close()
        await self._http.aclose()

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
    async def chat(
        self,
        model: str,
        prompt: Prompt,
        sampling: Sampling,
        timeout_s: float,
        num_ctx: int | None = None,
    ) -> RequestResult:
        """Stream one chat completion and time it; never raises (errors → `error`).

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
                extra_body = {"ignore_eos": True}
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
                    if self.parser == "sdk":
                        await self._stream_sdk(kwargs, st)
                    else:
                        await self._stream_raw(kwargs, st)
        except TimeoutError:
            error = f"timed out after {timeout_s:g} s"
        except openai.APIStatusError as exc:
            error = f"HTTP {exc.status_code}: {_status_text(exc)}"
            if exc.status_code == 404:
                error = f"model '{model}' not found (HTTP 404): {_status_text(exc)}"
        except (StreamError, openai.APIError) as exc:
            if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
                error = self._transport_text(exc, st)
            else:
                error = f"server error mid-stream: {one_line(exc, 200)}"
        except httpx2.HTTPError as exc:
            error = self._transport_text(exc, st)
        except ValueError as exc:
            error = f"malformed SSE data from server: {exc_text(exc)}"
        except Exception as exc:  # never raise from chat: the runner counts every request
            error = f"{type(exc).__name__}: {exc_text(exc)}"
        t_done = time.perf_counter()
        if error:
            error = redact(error, self._secret)
        # t0: headers written (common.send_clock); before the call if never sent.
        return self._result(st, sent[0] if sent else t_call, t_done, error)

    def _transport_text(self, exc: BaseException, st: StreamState) -> str:
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return f"timed out: {exc_text(exc)}"
        if st.started:
            return f"connection lost mid-stream: {exc_text(exc)}"
        if _caused_by(exc, httpx2.ConnectError):
            return f"cannot connect to {self.base_url}: {exc_text(exc)}"
        # Connected, but the server closed before answering (e.g. it crashed).
        return f"no response from {self.base_url}: {exc_text(exc)}"

    async def _stream_raw(self, kwargs: dict[str, Any], st: StreamState) -> None:
        create = self._client.chat.completions.with_streaming_response.create
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

    async def _stream_sdk(self, kwargs: dict[str, Any], st: StreamState) -> None:
        stream = await self._client.chat.completions.create(**kwargs)
        st.started = True
        try:
            async for chunk in stream:
                scan_sdk_chunk(chunk, time.perf_counter(), st)
        finally:
            await stream.close()

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
            output_text="".join(st.text),
            prompt_tokens=prompt_tokens,
            output_tokens=out,
            token_source="server" if out is not None else "none",
            finish_reason=st.finish,
            error=error,
            server=server,
        )


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _json(response: httpx.Response | None) -> Any:
    if response is None or response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _json_field(response: httpx.Response | None, key: str) -> Any:
    data = _json(response)
    return data.get(key) if isinstance(data, dict) else None
