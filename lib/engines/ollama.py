"""Ollama's native API through the official ollama-python client.

Native rather than Ollama's /v1 because only the native final chunk carries the
server-side durations (load, prompt eval, eval), reference/engine_apis.md §1.3.
ollama-python has no version() and its pydantic models drop fields they do not declare
(0.6.3's ModelDetails has no `context_length`), so /api/version and /api/ps are read
raw with httpx, and check_model takes the context length from /api/show's model_info.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama

from lib.core.metrics import ollama_server_timings
from lib.core.records import EngineInfo, ModelInfo, Prompt, RequestResult, Sampling
from lib.engines.base import EngineError, EngineUnreachable, ModelNotFound
from lib.engines.common import (
    META_TIMEOUT_S,
    POOL_SIZE,
    check_url,
    exc_text,
    mark_send,
    one_line,
    redact,
    send_clock,
)

# A count runs the model on the text (see count_tokens): a cold model loads first, which
# takes far longer than a metadata call.
COUNT_TIMEOUT_S = 300.0
# Two texts whose tokens add up in every tokenizer seen (SentencePiece, byte-level BPE):
# "hello" is one token, "hello hello" two. Their counts tell what the server adds to
# any raw prompt (a BOS for llama-family models, nothing for Qwen).
_PROBE_ONE, _PROBE_TWO = "hello", "hello hello"


def server_timings(final: Any) -> dict[str, Any]:
    """Server-side view from Ollama's final chunk (lib.metrics.ollama_server_timings:
    ns → ms, omitted zero fields read as 0, queue ≈ total − load − prompt eval − eval).

    prompt_eval_count stays None when omitted: old servers left it out on prompt-cache
    hits (ollama/ollama#2068), so a missing count is unknown, not zero.
    """
    timings = ollama_server_timings(final.model_dump(exclude_none=True))
    timings["prompt_eval_count"] = final.prompt_eval_count
    return timings


class OllamaEngine:
    """An Ollama server spoken to in its native API."""

    def __init__(
        self, base_url: str, api_key: str | None = None, *, meta_timeout_s: float = META_TIMEOUT_S
    ) -> None:
        root, path = check_url(base_url)
        # Users paste the /v1 URL too; the native API lives at the root.
        self.base_url = root + path.removesuffix("/v1")
        self.meta_timeout_s = meta_timeout_s
        self._secret = api_key  # kept out of every error message (redact)
        limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
        # A key for an authenticating proxy in front of Ollama (else OLLAMA_API_KEY).
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        # No read limit in the client: each chat enforces its own total deadline.
        self._client = ollama.AsyncClient(
            host=self.base_url,
            timeout=httpx.Timeout(None, connect=meta_timeout_s),
            limits=limits,
            headers=headers,
            event_hooks={"request": [mark_send]},
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=meta_timeout_s, headers=headers
        )
        self._special: dict[str, int] = {}  # model → tokens Ollama adds to a raw prompt

    async def aclose(self) -> None:
        """Close both HTTP clients."""
        await self._client.close()
        await self._http.aclose()

    # -- metadata -----------------------------------------------------------------
    def _meta_error(self, what: str, exc: BaseException) -> EngineError:
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            return EngineUnreachable(f"cannot connect to Ollama at {self.base_url}")
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return EngineUnreachable(
                f"no answer from {self.base_url} in {self.meta_timeout_s:g} s ({what})"
            )
        if isinstance(exc, ollama.ResponseError):
            text = f"{what}: HTTP {exc.status_code}: {one_line(exc.error, 200)}"
        else:
            text = f"{what}: {type(exc).__name__}: {exc_text(exc)}"
        return EngineError(redact(text, self._secret))

    async def _get_json(self, path: str) -> Any:
        try:
            response = await self._http.get(path)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            raise EngineError(f"GET {self.base_url}{path}: HTTP {code}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise self._meta_error(f"GET {path}", exc) from None

    async def version(self) -> str | None:
        """Server version from GET /api/version."""
        data = await self._get_json("/api/version")
        return data.get("version") if isinstance(data, dict) else None

    async def info(self) -> EngineInfo:
        """What answers here: always kind "ollama", with the server's version."""
        return EngineInfo("ollama", "ollama", self.base_url, await self.version())

    async def list_models(self) -> list[ModelInfo]:
        """Local models from /api/tags (client.list())."""
        try:
            async with asyncio.timeout(self.meta_timeout_s):
                listing = await self._client.list()
        except Exception as exc:
            raise self._meta_error("GET /api/tags", exc) from None
        out = []
        for m in listing.models:
            d = m.details
            extra: dict[str, Any] = {}
            if d is not None and d.format:
                extra["format"] = d.format
            if m.modified_at is not None:
                extra["modified_at"] = m.modified_at.isoformat()
            out.append(
                ModelInfo(
                    name=m.model or "",
                    quantization=d.quantization_level if d else None,
                    parameter_size=d.parameter_size if d else None,
                    family=d.family if d else None,
                    context_length=getattr(d, "context_length", None),
                    digest=m.digest,
                    size_bytes=int(m.size) if m.size is not None else None,
                    extra=extra,
                )
            )
        return out

    async def check_model(self, model: str) -> ModelInfo:
        """The model's info (context length from /api/show when available), or
        ModelNotFound naming the local models."""
        models = await self.list_models()
        wanted = {model, model + ":latest"} if ":" not in model else {model}
        found = next((m for m in models if m.name in wanted), None)
        if found is None:
            names = [m.name for m in models]
            shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
            raise ModelNotFound(
                f"model '{model}' not found at {self.base_url}; available: {shown or 'none'}"
                " (ollama pull it first)"
            )
        try:
            async with asyncio.timeout(self.meta_timeout_s):
                shown_info = await self._client.show(found.name)
        except Exception:
            return found  # /api/show is an extra; the model is known to exist
        info = shown_info.modelinfo or {}
        arch = info.get("general.architecture")
        if found.context_length is None and arch:
            found.context_length = info.get(f"{arch}.context_length")
        if shown_info.capabilities:
            found.extra["capabilities"] = list(shown_info.capabilities)
        return found

    async def ps(self) -> list[dict[str, Any]]:
        """Loaded models, raw from /api/ps (size, size_vram, expires_at, context_length)."""
        data = await self._get_json("/api/ps")
        models = data.get("models") if isinstance(data, dict) else None
        return list(models or [])

    async def pull(self, model: str) -> AsyncIterator[dict[str, Any]]:
        """Pull a model, yielding progress dicts (status, digest, total, completed).

        Raises EngineError on failure (including an error line mid-stream).
        """
        try:
            stream = await self._client.pull(model, stream=True)
            async for progress in stream:
                yield progress.model_dump(exclude_none=True)
        except ollama.ResponseError as exc:
            text = f"pull {model}: {one_line(exc.error, 200)}"
            raise EngineError(redact(text, self._secret)) from None
        except (ConnectionError, httpx.HTTPError, ValueError) as exc:
            raise self._meta_error(f"pull {model}", exc) from None

    # -- token counts -------------------------------------------------------------
    async def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens in `text` by the model's tokenizer, as Ollama counts a prompt.

        Ollama has no tokenize endpoint, so this runs a non-streamed /api/generate with
        `raw: true` and one predicted token and reads `prompt_eval_count`: the raw text
        as the model's tokenizer sees it, since raw skips the chat template. The tokens
        Ollama adds to any raw prompt (a BOS for some models) are measured once per
        model and subtracted. Current Ollama counts cached prompt tokens in
        prompt_eval_count; a server that leaves the count out (old versions on a cache
        hit, ollama/ollama#2068) gives None, as does one without /api/generate.
        Raises EngineUnreachable, ModelNotFound or EngineError.
        """
        if not text:
            return 0
        if model not in self._special:
            one = await self._prompt_count(model, _PROBE_ONE)
            two = await self._prompt_count(model, _PROBE_TWO)
            if one is None or two is None:
                return None
            extra = 2 * one - two
            # Anything but a few special tokens means the probe's assumption failed.
            self._special[model] = extra if 0 <= extra <= 2 else 0
        n = await self._prompt_count(model, text)
        return None if n is None else max(n - self._special[model], 0)

    async def _prompt_count(self, model: str, text: str) -> int | None:
        body = {
            "model": model,
            "prompt": text,
            "raw": True,
            "stream": False,
            "options": {"num_predict": 1, "temperature": 0},
        }
        what = "POST /api/generate"
        try:
            response = await self._http.post("/api/generate", json=body, timeout=COUNT_TIMEOUT_S)
        except httpx.TimeoutException:
            raise EngineUnreachable(
                f"no answer from {self.base_url} in {COUNT_TIMEOUT_S:g} s ({what})"
            ) from None
        except httpx.HTTPError as exc:
            raise self._meta_error(what, exc) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if response.status_code == 404 and error:
            # Ollama's own 404 names the model; a route missing gives Go's plain text.
            raise ModelNotFound(
                redact(f"model '{model}' not found: {one_line(error, 200)}", self._secret)
            )
        if response.status_code in (404, 405, 501):
            return None
        if response.status_code != 200:
            reason = one_line(error or response.reason_phrase, 200)
            raise EngineError(
                redact(f"{what}: HTTP {response.status_code}: {reason}", self._secret)
            )
        count = data.get("prompt_eval_count") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return None
        return count

    # -- chat ---------------------------------------------------------------------
    async def chat(
        self,
        model: str,
        prompt: Prompt,
        sampling: Sampling,
        timeout_s: float,
        num_ctx: int | None = None,
    ) -> RequestResult:
        """Stream one /api/chat request and time it; never raises (errors → `error`).

        Every sampling option is sent explicitly (Ollama's defaults differ from other
        engines'). `ignore_eos` has no Ollama equivalent and is not sent.
        """
        options: dict[str, Any] = {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "num_predict": sampling.max_tokens,
        }
        if num_ctx:
            options["num_ctx"] = num_ctx  # held constant: a change reloads the model
        times: list[float] = []
        text: list[str] = []
        firsts: dict[str, float] = {}  # "reasoning" / "answer": its first chunk's arrival
        final_box: list[Any] = []
        final: Any = None
        error: str | None = None
        t_call = time.perf_counter()
        try:
            with send_clock() as sent:
                async with asyncio.timeout(timeout_s):
                    await self._stream(model, prompt, options, times, text, firsts, final_box)
            final = final_box[0] if final_box else None
            if final is None:
                # Ollama 0.24 ends a stream this way when the model repeats one token
                # over 30 times (tests/data/ollama-0.24.0/README.md): a failure, not a
                # short answer.
                error = "stream ended without done (Ollama cut the answer off)"
        except TimeoutError:
            error = f"timed out after {timeout_s:g} s"
        except ollama.ResponseError as exc:
            reason = one_line(exc.error, 200)
            if exc.status_code == -1:
                error = f"server error mid-stream: {reason}"
            elif exc.status_code == 404:
                error = f"model '{model}' not found (HTTP 404): {reason}"
            else:
                error = f"HTTP {exc.status_code}: {reason}"
        except (ConnectionError, httpx.ConnectError) as exc:
            # The client converts ConnectError to ConnectionError only when not streaming.
            error = f"cannot connect to Ollama at {self.base_url}: {exc_text(exc)}"
        except httpx.TimeoutException as exc:
            error = f"timed out: {exc_text(exc)}"
        except httpx.HTTPError as exc:
            where = "mid-stream" if times else "before any output"
            error = f"connection lost {where}: {exc_text(exc)}"
        except json.JSONDecodeError as exc:
            error = f"malformed NDJSON line from server: {exc_text(exc)}"
        except Exception as exc:  # never raise from chat: the runner counts every request
            error = f"{type(exc).__name__}: {exc_text(exc)}"
        t_done = time.perf_counter()
        if error:
            error = redact(error, self._secret)
        result = RequestResult(
            # t0: headers written (common.send_clock); the request goes out on the
            # stream's first iteration. Before the call if it never went out.
            t_send=sent[0] if sent else t_call,
            t_done=t_done,
            chunk_times=times,
            t_first_reasoning=firsts.get("reasoning"),
            t_first_answer=firsts.get("answer"),
            output_text="".join(text),
            error=error,
        )
        if final is not None:
            self._fill_final(result, final)
        return result

    async def _stream(
        self,
        model: str,
        prompt: Prompt,
        options: dict[str, Any],
        times: list[float],
        text: list[str],
        firsts: dict[str, float],
        final_box: list[Any],
    ) -> None:
        """Read the stream: output chunks' times and answer text; `firsts` gets when the
        first thinking chunk ("reasoning") and the first content or tool-call chunk
        ("answer") arrived; the final (done) chunk goes in `final_box`."""
        # Validates and serialises the request; it is sent on the first iteration.
        stream = await self._client.chat(
            model=model, messages=prompt.messages, stream=True, options=options
        )
        async for part in stream:
            now = time.perf_counter()
            msg = part.message
            if msg.content or msg.thinking or msg.tool_calls:
                times.append(now)
                if msg.content:
                    text.append(msg.content)
                if msg.thinking:
                    firsts.setdefault("reasoning", now)
                if msg.content or msg.tool_calls:
                    firsts.setdefault("answer", now)
            if part.done:
                final_box.append(part)

    @staticmethod
    def _fill_final(result: RequestResult, final: Any) -> None:
        result.finish_reason = final.done_reason
        # prompt_eval_count was historically missing on prompt-cache hits: unknown,
        # not zero (ollama/ollama#2068).
        result.prompt_tokens = final.prompt_eval_count
        if final.eval_count is not None:
            result.output_tokens, result.token_source = final.eval_count, "server"
        elif not result.chunk_times:
            result.output_tokens, result.token_source = 0, "server"  # omitted zero
        result.server = server_timings(final)
