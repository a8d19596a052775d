"""Scripted OpenAI-compatible server (vLLM, llama.cpp or generic flavour) with exact timing.

Streams `/v1/chat/completions` as the real engines do (reference/engine_apis.md §2–3):
a role-only opening chunk at receipt, optional SSE comments, the first content chunk
`ttft_ms` after the request arrived, then one chunk every `gap_ms` carrying 1 or 2
tokens (pattern), usage only in a final chunk with empty choices (vLLM) or on the
finish chunk with `timings` (llama.cpp), then `[DONE]`.

Subprocess use (benchmarks):
    python -m tests.scripted.openai_server --port 0 --ttft-ms 150 --gap-ms 20
prints `READY <port>`; GET /_scripted/requests returns what was received and when
each output chunk was written. `--processes N` serves from N processes on the port
(SO_REUSEPORT; the parent prints READY once all listen, and stopping it stops them).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from tests.scripted.core import (
    Item,
    Recorded,
    Reply,
    ScriptedServer,
    add_common_args,
    add_process_args,
    count_tokens,
    fault_of,
    serve,
    token_plan,
    word,
)

_DEFAULT_WORD = word


@functools.lru_cache(maxsize=256)
def _content_choice(word_of: Any, start: int, n: int, finish: str | None) -> str:
    """The JSON of a content choice carrying tokens start..start+n-1 of `word_of` (the
    module's word(), which tests may swap for their own vocabulary: it is part of the
    key). Building each chunk anew cost ~200 µs per request: a burst of 256 requests kept
    the server from reading requests for ~50 ms, which showed as TTFT error in
    bench/timing_accuracy.py."""
    text = "".join(word_of(start + j) for j in range(n))
    choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
    return json.dumps(choice)


_TOKENIZE_ROUTES = {
    "llama-cpp-python": ("POST", "/extras/tokenize/count"),
    "vllm": ("POST", "/tokenize"),
    "llamacpp": ("POST", "/tokenize"),
}


@dataclass
class OpenAIScript:
    """What the server does; fields can be changed between requests by tests."""

    flavor: str = "vllm"  # "vllm", "llamacpp", "llama-cpp-python" or "generic"
    models: list[str] = field(default_factory=lambda: ["scripted-model"])
    ttft_ms: float = 150.0  # request receipt → first content chunk
    gap_ms: float = 20.0  # between output chunks
    pattern: tuple[int, ...] = (1, 2)  # tokens per output chunk, repeating
    tokens: int | None = None  # output length; None = the request's max_tokens
    comments: bool = True  # SSE comment lines before the role chunk and mid-stream
    usage: str = "auto"  # "final" (choices == []), "finish" (llama.cpp), "none"
    timings: bool | None = None  # llama.cpp `timings` on the finish chunk
    reasoning_chunks: int = 0  # the first k output chunks carry reasoning text
    empty_chunks: tuple[int, ...] = ()  # output chunks whose content is "" (no role)
    tool_call: bool = False  # the last output chunk is a tool call
    fault: str | None = None  # see core.FAULTS
    fault_after: int = 2  # output chunks written before a mid-stream fault
    api_key: str | None = None
    version: str = "0.33.0"
    max_model_len: int = 4096
    root: str = "/models/Qwen2.5-0.5B-Instruct-AWQ"
    tokenizer: bool = True  # serve the flavour's tokenize route (see _tokenize)
    bos: bool = True  # the tokenizer adds a BOS where the server's defaults add specials
    tokenize_fault: str | None = None  # "http500": the tokenize route fails
    retokenize_extra: int = 0  # added to every count of non-empty text (re-segmentation)
    # "scripted": core.count_tokens; "words": one token per whitespace-separated word.
    tokenize_rule: str = "scripted"
    tokenize_model_check: bool = False  # vLLM: 404 naming an unknown model, as vLLM does
    crlf: bool | None = None  # CRLF line ends (sse-starlette); None: llama-cpp-python only
    # A server that batches badly: each other request in flight when one arrives adds
    # this much to its TTFT (capacity search tests: the limit at an SLO is known).
    ttft_per_inflight_ms: float = 0.0


class OpenAIServer(ScriptedServer):
    """Scripted OpenAI-compatible server; `script` holds the behaviour."""

    def __init__(self, script: OpenAIScript | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.script = script or OpenAIScript()
        self._n = 0
        self._planned_ends: list[float] = []  # monotonic time each accepted stream ends

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def handle(self, rec: Recorded, reply: Reply) -> Any:
        s = self.script
        if s.api_key and rec.headers.get("authorization") != f"Bearer {s.api_key}":
            # vLLM's API-key middleware answers outside the OpenAI error shape.
            reply.json(401, {"error": "Unauthorized"})
            return True
        key = (rec.method, rec.path)
        llama = s.flavor == "llamacpp"
        if key == ("GET", "/v1/models") or (llama and key == ("GET", "/models")):
            reply.json(200, {"object": "list", "data": [self._card(m) for m in s.models]})
        elif key == ("GET", "/health"):
            reply.json(200, {"status": "ok"} if llama else {})
        elif key == ("GET", "/version") and s.flavor == "vllm":
            reply.json(200, {"version": s.version})
        elif key == ("GET", "/metrics") and s.flavor == "vllm":
            text = (
                "# HELP vllm:num_requests_running Number of requests in model execution.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                f'vllm:num_requests_running{{engine="0",model_name="{s.models[0]}"}} 0.0\n'
                f'vllm:kv_cache_usage_perc{{engine="0",model_name="{s.models[0]}"}} 0.0\n'
            )
            reply.send(200, text.encode(), "text/plain; version=0.0.4")
        elif key == ("GET", "/props") and llama:
            reply.json(
                200,
                {
                    "build_info": "b6097-1a2b3c4",
                    "model_path": s.root,
                    "total_slots": 4,
                    "default_generation_settings": {"n_ctx": s.max_model_len},
                },
            )
        elif key == ("GET", "/openapi.json") and s.flavor == "llama-cpp-python":
            info = {"title": "🦙 llama.cpp Python API", "version": "0.3.36"}
            reply.json(200, {"openapi": "3.1.0", "info": info})
        elif s.tokenizer and key == _TOKENIZE_ROUTES.get(s.flavor):
            self._tokenize(rec, reply)
        elif key == ("POST", "/v1/chat/completions") or (
            llama and key == ("POST", "/chat/completions")
        ):
            return self._chat(rec, reply)
        else:
            reply.json(404, {"detail": "Not Found"})  # FastAPI's, before any engine code
        return True

    def _tokenize(self, rec: Recorded, reply: Reply) -> None:
        """Token counts as each server's route gives them: llama-cpp-python's
        /extras/tokenize/count always adds BOS, vLLM's /tokenize unless
        add_special_tokens is false, llama-server's only with add_special; llama-server
        tokenizes nothing when `content` is missing. The count follows `tokenize_rule`:
        core.count_tokens by default, or one token per whitespace-separated word."""
        s, body = self.script, rec.body if isinstance(rec.body, dict) else {}
        if s.tokenize_fault == "http500":
            self.error(reply, 500, "tokenizer crashed")
            return
        bos = int(s.bos)
        rule = (lambda text: len(text.split())) if s.tokenize_rule == "words" else count_tokens

        def counted(text: str) -> int:
            return rule(text) + s.retokenize_extra if text else 0

        if s.flavor == "llama-cpp-python":
            if not isinstance(body.get("input"), str):
                reply.json(422, {"detail": [{"type": "missing", "loc": ["body", "input"]}]})
                return
            reply.json(200, {"count": counted(body["input"]) + bos})
        elif s.flavor == "vllm":
            if not isinstance(body.get("prompt"), str):
                self.error(reply, 400, "prompt: Field required")
                return
            if s.tokenize_model_check and body.get("model") not in s.models:
                msg = f"The model `{body.get('model')}` does not exist."
                self.error(reply, 404, msg, param="model")
                return
            n = counted(body["prompt"]) + bos * body.get("add_special_tokens", True)
            reply.json(200, {"count": n, "max_model_len": s.max_model_len, "tokens": [7] * n})
        else:
            content = body.get("content")
            n = counted(content) + bos * body.get("add_special", False) if content else 0
            reply.json(200, {"tokens": [7] * n})

    def _card(self, model: str) -> dict[str, Any]:
        s = self.script
        card: dict[str, Any] = {"id": model, "object": "model", "created": 1700000000}
        if s.flavor == "vllm":
            card |= {"owned_by": "vllm", "root": s.root, "parent": None}
            card |= {"max_model_len": s.max_model_len, "permission": []}
        elif s.flavor == "llamacpp":
            card |= {"owned_by": "llamacpp", "meta": {"n_ctx_train": 32768, "n_params": 494032768}}
        elif s.flavor == "llama-cpp-python":
            card |= {"owned_by": "me", "permissions": []}
        else:
            card |= {"owned_by": "system"}
        return card

    def error_object(self, status: int, message: str) -> dict[str, Any]:
        """The OpenAI error object, its type named after the status as vLLM names it
        (404 NotFoundError, 500 InternalServerError); llama.cpp orders the fields its way."""
        kind = HTTPStatus(status).phrase.replace(" ", "").removesuffix("Error") + "Error"
        if self.script.flavor == "llamacpp":
            return {"error": {"code": status, "message": message, "type": kind}}
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}

    def stream_item(self, obj: Any) -> bytes:
        """A JSON object as one SSE event."""
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    def _chat(self, rec: Recorded, reply: Reply) -> Any:
        s = self.script
        body = rec.body if isinstance(rec.body, dict) else {}
        model = body.get("model")
        fault = rec.fault = fault_of(rec, model, s.fault)
        if model not in s.models and not (model or "").startswith("fault-"):
            msg = f"The model `{model}` does not exist. Valid aliases: {', '.join(s.models)}."
            return self.error(reply, 404, msg, param="model")
        if fault == "http503":
            return self.error(reply, 503, "Service Unavailable")
        if fault == "hang_headers":
            return reply.hang()
        if fault == "drop":  # the server process died while handling the request
            reply.close()
            return False
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        n_tokens = min(s.tokens, max_tokens) if s.tokens is not None else max_tokens
        finish = "length" if n_tokens >= max_tokens else "stop"
        sizes = token_plan(n_tokens, s.pattern)
        if fault in ("reset", "close", "hang", "error", "malformed"):
            sizes = sizes[: s.fault_after]
        ttft_ms = s.ttft_ms
        if s.ttft_per_inflight_ms:
            now = time.monotonic()
            self._planned_ends = [t for t in self._planned_ends if t > now]
            ttft_ms += s.ttft_per_inflight_ms * len(self._planned_ends)
            span_ms = ttft_ms + max(len(sizes) - 1, 0) * s.gap_ms
            self._planned_ends.append(now + span_ms / 1000)
        self._n += 1
        llama = s.flavor == "llamacpp"
        usage_mode = s.usage if s.usage != "auto" else ("finish" if llama else "final")
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        head = (
            f'{{"id":"chatcmpl-{self._n}","object":"chat.completion.chunk",'
            f'"created":1700000000,"model":{json.dumps(model)},"choices":['
        ).encode()

        def event(choices: str, tail: str = "") -> bytes:
            return b"data: " + head + choices.encode() + b"]" + tail.encode() + b"}\n\n"

        def delta_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return event(json.dumps(choice))

        items: list[Item] = []
        delays: list[float] = []
        tokens: list[int] = []

        def add(item: Item, at_ms: float, n: int = 0) -> None:
            items.append(item)
            delays.append(at_ms / 1000)
            tokens.append(n)

        if s.comments:
            add(b": ping\n\n", 0)
        if s.flavor == "llama-cpp-python":
            add(delta_chunk({"role": "assistant"}), 0)
        else:
            add(delta_chunk({"role": "assistant", "content": None if llama else ""}), 0)
        reasoning_key = "reasoning_content" if llama else "reasoning"
        pos = 0
        plain = not (s.empty_chunks or s.reasoning_chunks or s.tool_call)
        for i, n in enumerate(sizes):
            at = ttft_ms + i * s.gap_ms
            last = i == len(sizes) - 1 and not fault and not llama
            if plain:  # the common case, cached: a burst of requests is built quickly
                # The default word() repeats every 5 tokens: a few keys cover every chunk.
                start = pos % 5 if word is _DEFAULT_WORD else pos
                add(event(_content_choice(word, start, n, finish if last else None)), at, n)
                pos += n
                if s.comments and i == 1:
                    add(b": keep-alive\n\n", at)
                continue
            text = "".join(word(pos + j) for j in range(n))
            pos += n
            if i in s.empty_chunks:
                delta: dict[str, Any] = {"content": ""}
            elif i < s.reasoning_chunks:
                delta = {reasoning_key: text}
            elif s.tool_call and i == len(sizes) - 1:
                call = {"name": "lookup", "arguments": json.dumps({"q": text})}
                delta = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function"}]}
                delta["tool_calls"][0]["function"] = call
            else:
                delta = {"content": text}
            add(delta_chunk(delta, finish if last else None), at, n)
            if s.comments and i == 1:
                add(b": keep-alive\n\n", at)
        end = ttft_ms + max(len(sizes) - 1, 0) * s.gap_ms
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        prompt_tokens = prompt_tokens // 4 + 1
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + n_tokens,
            "completion_tokens": n_tokens,
        }
        if fault == "reset":
            add(reply.reset, end + 1)
        elif fault == "close":
            add(reply.close, end + 1)
        elif fault == "error":
            add(self.error_item("scripted failure: engine died"), end + 1)
            add(b"data: [DONE]\n\n", end + 1)
        elif fault == "malformed":
            add(b'data: {"id":"chatcmpl-x","choices":[{"delta":{"content":"br\n\n', end + 1)
            add(b"data: [DONE]\n\n", end + 1)
        elif fault != "hang":
            if llama:
                tail = ""
                if include and usage_mode == "finish":
                    tail += ',"usage":' + json.dumps(usage)
                if s.timings if s.timings is not None else True:
                    tail += ',"timings":' + json.dumps(self._timings(prompt_tokens, n_tokens))
                choice = {"finish_reason": finish, "index": 0, "delta": {}}
                add(event(json.dumps(choice), tail), end)
            if include and usage_mode == "final":
                add(event("", ',"usage":' + json.dumps(usage)), end)
            add(b"data: [DONE]\n\n", end)

        if s.crlf if s.crlf is not None else s.flavor == "llama-cpp-python":
            items = [i.replace(b"\n", b"\r\n") if isinstance(i, bytes) else i for i in items]
        reply.start("text/event-stream; charset=utf-8")
        if fault == "hang":
            # No end-of-body marker: the client must see a stalled stream.
            done = self.stream(reply, rec, items, delays, tokens, lambda: None)
            return self._then_hang(done, reply)
        done = self.stream(reply, rec, items, delays, tokens, reply.end)
        return done

    async def _then_hang(self, done: asyncio.Future[bool], reply: Reply) -> bool:
        await done
        return await reply.hang()

    def _timings(self, prompt_n: int, predicted_n: int) -> dict[str, float]:
        s = self.script
        predicted_ms = max(predicted_n - 1, 0) * s.gap_ms
        return {
            "cache_n": 0,
            "prompt_n": prompt_n,
            "prompt_ms": s.ttft_ms,
            "prompt_per_token_ms": s.ttft_ms / max(prompt_n, 1),
            "prompt_per_second": prompt_n / (s.ttft_ms / 1000) if s.ttft_ms else 0.0,
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / max(predicted_n, 1),
            "predicted_per_second": predicted_n / (predicted_ms / 1000) if predicted_ms else 0.0,
        }


def main(argv: list[str] | None = None) -> None:
    """Run the scripted OpenAI server in the foreground (for benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    flavors = ("vllm", "llamacpp", "llama-cpp-python", "generic")
    parser.add_argument("--flavor", choices=flavors, default="vllm")
    parser.add_argument("--models", default="scripted-model", help="comma-separated ids")
    parser.add_argument("--no-comments", action="store_true")
    add_process_args(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    script = OpenAIScript(
        flavor=args.flavor,
        models=args.models.split(","),
        ttft_ms=args.ttft_ms,
        gap_ms=args.gap_ms,
        pattern=tuple(int(x) for x in args.pattern.split(",")),
        tokens=args.tokens,
        comments=not args.no_comments,
        fault=args.fault,
    )
    server = OpenAIServer(script, host=args.host, port=args.port)
    if args.no_record:
        server.record_paths = set()
    serve(server, args, "tests.scripted.openai_server", argv)


if __name__ == "__main__":
    main()
