"""A replay of a real Ollama 0.24.0 server: tests/data/ollama-0.24.0/, byte for byte.

Each recording is `NAME.txt` (the body exactly as received) and `NAME.headers.txt` (status
line and headers, CRLF); the README there says how and from what they were recorded. A
request is answered from the recording its method, path and model (named in the JSON body)
select; the status line, headers and body bytes go out as recorded (`Date` included). A
recorded `Transfer-Encoding: chunked` body goes out one line per chunk, written
`gap_s` apart, so the client sees a stream; a `Content-Length` body in one write.

Routing (NAME is `MODEL__ENDPOINT`):

- `GET /api/version`, `/api/tags`, `/api/ps`, `/v1/models`: the recordings of `listing`
  (one model's session; the listings name every local model);
- `POST /api/show` (`model` or `name`), `/api/chat`, `/api/generate`, `/v1/chat/completions`,
  `/v1/completions`: the model's recording, streamed or not as the body asks (Ollama's
  default: native streams, /v1 does not). `tiny-qwen2-q8` with num_predict (or
  max_tokens) 16 is the `tiny-qwen2-q8_np16` recording, which ends normally; with any
  other value, the silent cut-off;
- an unknown model: the recorded 404, `unknown__api_chat_404` on the native API,
  `unknown__v1_chat_404` on /v1 (both name the model `no-such-model`, as recorded);
- `POST /api/pull`: `qwen-coder-0.5b__api_pull_offline` whatever the model (the server
  was recorded offline);
- `finals`: recording names the next streamed `/api/chat` requests get instead, in
  arrival order: the body is that final chunk alone (the concurrent-4 recordings hold
  only the final chunk), under the headers of the model's recorded stream.

Nothing else was recorded: another path gets Go's `404 page not found`, and a request for
a listed model whose answer was not recorded (`tiny-qwen2-f16`, `/v1/completions` not
streamed) gets a 501 that says so, so a test can never mistake it for Ollama's answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.scripted.core import Recorded, Reply, ScriptedServer

DATA = Path(__file__).resolve().parent.parent / "data" / "ollama-0.24.0"
MODELS = ("qwen-coder-0.5b", "smollm2-135m", "tiny-qwen2-q8")
LISTINGS = {
    "/api/version": "api_version",
    "/api/tags": "api_tags",
    "/api/ps": "api_ps",
    "/v1/models": "v1_models",
}
GENERATION = {
    "/api/chat": "api_chat",
    "/api/generate": "api_generate",
    "/v1/chat/completions": "v1_chat_completions",
    "/v1/completions": "v1_completions",
}
PULL = "qwen-coder-0.5b__api_pull_offline"
UNKNOWN_NATIVE = "unknown__api_chat_404"
UNKNOWN_V1 = "unknown__v1_chat_404"


class Recording:
    """One recorded response: its head (status line and headers, as bytes) and body."""

    def __init__(self, name: str, head: bytes, body: bytes) -> None:
        self.name, self.head, self.body = name, head, body
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        if not self.chunked and int(self.headers["content-length"]) != len(body):
            raise ValueError(f"{name}: Content-Length does not match the body")

    def lines(self) -> list[bytes]:
        """The body split after each newline: the chunks the stream is written as."""
        return self.body.splitlines(keepends=True)


def load(name: str, headers_of: str | None = None) -> Recording:
    """The recording `name` (its head from `headers_of` when given)."""
    head = (DATA / f"{headers_of or name}.headers.txt").read_bytes()
    return Recording(name, head, (DATA / f"{name}.txt").read_bytes())


def carries_output(line: bytes) -> bool:
    """Whether a streamed line carries generated text (for `Recorded.sent`)."""
    return any(key in line for key in (b'"content":"', b'"response":"', b'"text":"')) and not any(
        empty in line for empty in (b'"content":""', b'"response":""', b'"text":""')
    )


class RecordedOllama(ScriptedServer):
    """Answers as the recorded Ollama 0.24.0 did; see the module docstring for routing."""

    def __init__(self, listing: str = "qwen-coder-0.5b", gap_s: float = 0.002, **kw: Any):
        super().__init__(**kw)
        self.listing, self.gap_s = listing, gap_s
        self.finals: list[str] = []
        self.served: list[str] = []  # the recording each request was answered with

    # -- routing ------------------------------------------------------------------
    def route(self, rec: Recorded) -> Recording | None:
        """The recording that answers `rec`, or None when nothing was recorded for it."""
        body = rec.body if isinstance(rec.body, dict) else {}
        if rec.method == "GET" and rec.path in LISTINGS:
            return load(f"{self.listing}__{LISTINGS[rec.path]}")
        if rec.method != "POST":
            return None
        if rec.path == "/api/pull":
            return load(PULL)
        model = str(body.get("model") or body.get("name") or "").removesuffix(":latest")
        if rec.path == "/api/show":
            return load(f"{model}__api_show") if model in MODELS else load(UNKNOWN_NATIVE)
        if rec.path not in GENERATION:
            return None
        if model not in MODELS:
            return load(UNKNOWN_V1 if rec.path.startswith("/v1/") else UNKNOWN_NATIVE)
        native = not rec.path.startswith("/v1/")
        stream = body.get("stream", native) is not False
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        limit = options.get("num_predict") if native else body.get("max_tokens")
        key = "tiny-qwen2-q8_np16" if model == "tiny-qwen2-q8" and limit == 16 else model
        name = f"{key}__{GENERATION[rec.path]}_{'stream' if stream else 'nostream'}"
        if rec.path == "/api/chat" and stream and self.finals:
            return load(self.finals.pop(0), headers_of=name)
        return load(name) if (DATA / f"{name}.txt").exists() else None

    # -- answering ----------------------------------------------------------------
    def handle(self, rec: Recorded, reply: Reply) -> Any:
        found = self.route(rec)
        if found is None:
            return self._unrecorded(rec, reply)
        self.served.append(found.name)
        reply.transport.write(found.head)
        reply.answered = True
        if not found.chunked:
            reply.transport.write(found.body)
            return True
        reply.streaming = True
        items = found.lines()
        delays = [i * self.gap_s for i in range(len(items))]
        tokens = [int(carries_output(item)) for item in items]
        return self.stream(reply, rec, items, delays, tokens, reply.end)

    def _unrecorded(self, rec: Recorded, reply: Reply) -> bool:
        self.served.append("")
        if rec.path in GENERATION or rec.path == "/api/show":
            text = f"not recorded: {rec.method} {rec.path} for this model or mode\n"
            reply.send(501, text.encode(), "text/plain; charset=utf-8")
        else:
            reply.send(404, b"404 page not found", "text/plain")
        return True
