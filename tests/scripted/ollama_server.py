"""Scripted Ollama server: the native NDJSON API with exact timing and faults.

Shapes follow reference/engine_apis.md §1: `/api/chat` streams NDJSON chunks
`{"model","created_at","message":{...},"done":false}` and a final chunk with
`done_reason` and ns durations, zero fields omitted (Go `omitempty`); errors are
`{"error": "..."}` (404 for an unknown model, 503 when the queue is full, a line
mid-stream). Also `/`, `/api/version`, `/api/tags`, `/api/ps`, `/api/show`, `/api/pull`,
and the import flow (Ollama 0.24): `HEAD`/`POST /api/blobs/sha256:<hex>` (200 present,
404 absent; 201 stored, 400 for a bad digest or a body that does not hash to it) and
`POST /api/create` from uploaded `files`, after which the model is listed and served.
`POST /api/generate` answers as a tokenizer only (prompt_eval_count, see _generate).

Subprocess use: `python -m tests.scripted.ollama_server --port 0 --ttft-ms 150`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tests.scripted.core import (
    Item,
    Recorded,
    Reply,
    ScriptedServer,
    add_common_args,
    fault_of,
    token_plan,
    word,
)

CREATED_AT = "2025-06-09T10:00:00.000000Z"
BLOBS = "/api/blobs/"
# manifest.BlobsPath's check: "sha256:" or "sha256-" and 64 hex digits.
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
# model.ParseName, simplified: [namespace/]name[:tag].
_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}"
_MODEL_NAME = re.compile(rf"({_PART}/)?{_PART}(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,79}})?")
# Content types as Go writes them, for `/` and the blob routes (as Ollama 0.24 answers them;
# the other JSON answers here say plain application/json).
GO_JSON = "application/json; charset=utf-8"
GO_TEXT = "text/plain; charset=utf-8"


def raw_tokens(text: str) -> int:
    """The scripted Ollama tokenizer: one token per whitespace-separated word, plus one
    per line break (so a blank line counts, as it does in real tokenizers)."""
    return len(text.split()) + text.count("\n")


def model_entry(
    name: str,
    quant: str = "Q4_K_M",
    params: str = "7.6B",
    family: str = "qwen2",
    size: int = 4_683_087_332,
) -> dict[str, Any]:
    """A /api/tags entry as Ollama writes it."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    details = {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": params,
        "quantization_level": quant,
    }
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-06-01T10:00:00.000000Z",
        "size": size,
        "digest": digest,
        "details": details,
    }


@dataclass
class OllamaScript:
    """What the server does; fields can be changed between requests by tests."""

    models: list[dict[str, Any]] = field(
        default_factory=lambda: [
            model_entry("qwen2.5:7b-instruct-q4_K_M"),
            model_entry("llama3.2:latest", quant="Q8_0", params="3.2B", family="llama"),
        ]
    )
    ttft_ms: float = 150.0
    gap_ms: float = 20.0
    pattern: tuple[int, ...] = (1, 2)  # tokens per chunk, repeating
    tokens: int | None = None  # output length; None = num_predict
    load_ms: float = 0.0  # reported load_duration (0 → omitted)
    queue_ms: float = 0.0  # folded into total_duration only, as in Ollama
    # OLLAMA_NUM_PARALLEL: at most this many streams at once; the rest wait their turn,
    # the wait shown in TTFT and folded into total_duration as Ollama does. None: no limit.
    num_parallel: int | None = None
    omit_prompt_count: bool = False  # old prompt-cache bug: prompt_eval_count missing
    thinking_chunks: int = 0  # the first k output chunks carry message.thinking
    tool_call: bool = False  # the last output chunk carries tool_calls
    fault: str | None = None  # see core.FAULTS
    fault_after: int = 2
    version: str = "0.33.0"
    context_length: int = 32768
    pull_gap_ms: float = 2.0
    blobs: dict[str, bytes] = field(default_factory=dict)  # "sha256:<hex>" -> content
    created: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> create body
    generate: bool = True  # serve POST /api/generate (see _generate)
    raw_bos: int = 0  # tokens the tokenizer adds to every raw prompt (a llama-family BOS)


class _BodyTap:
    """The connection's reader, keeping the raw bytes of the last request body.

    core parses a body as JSON or lossy UTF-8 text; a blob upload needs the exact bytes
    to check its digest. The body is the only thing read with `readexactly`, and each
    request starts with `readline`, so a body-less request sees b"".
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.body = b""

    async def readline(self) -> bytes:
        self.body = b""
        return await self._reader.readline()

    async def readexactly(self, n: int) -> bytes:
        self.body = await self._reader.readexactly(n)
        return self.body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def _bad_file_path(name: str) -> bool:
    """validateCreateFilePath: a file name in `files` must be a clean relative path."""
    parts = name.split("/")
    return name in ("", ".") or "" in parts or ".." in parts or any(c in name for c in "\\:")


def _go_quote(value: Any) -> str:
    """A parameter value as Go's %#v prints it in /api/show (strings quoted)."""
    return json.dumps(value) if isinstance(value, str) else str(value)


class OllamaServer(ScriptedServer):
    """Scripted Ollama server; `script` holds the behaviour."""

    def __init__(self, script: OllamaScript | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.script = script or OllamaScript()

    def _find(self, name: Any) -> dict[str, Any] | None:
        for m in self.script.models:
            if name in (m["name"], m["name"].removesuffix(":latest")):
                return m
        return None

    def _not_found(self, reply: Reply, name: Any) -> bool:
        return self.error(reply, 404, f"model '{name}' not found")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        # Same parsing as core, through a tap that keeps the raw body (see _BodyTap).
        await super()._connection(_BodyTap(reader), writer)  # type: ignore[arg-type]

    def handle(self, rec: Recorded, reply: Reply) -> Any:
        s = self.script
        body = rec.body if isinstance(rec.body, dict) else {}
        key = (rec.method, rec.path)
        if key == ("GET", "/"):
            reply.send(200, b"Ollama is running", GO_TEXT)
        elif key == ("HEAD", "/"):
            reply.send(200, b"Ollama is running", GO_TEXT, head_only=True)
        elif rec.path.startswith(BLOBS) and rec.method in ("HEAD", "POST"):
            return self._blob(rec, reply)
        elif key == ("POST", "/api/create"):
            return self._create(rec, reply, body)
        elif key == ("GET", "/api/version"):
            reply.json(200, {"version": s.version})
        elif key == ("GET", "/api/tags"):
            reply.json(200, {"models": s.models})
        elif key == ("GET", "/api/ps"):
            loaded = [
                m
                | {
                    "size_vram": m["size"],
                    "expires_at": "2025-06-09T10:05:00.000000Z",
                    "context_length": s.context_length,
                }
                for m in s.models[:1]
            ]
            reply.json(200, {"models": loaded})
        elif key == ("POST", "/api/show"):
            m = self._find(body.get("model"))
            if m is None:
                return self._not_found(reply, body.get("model"))
            arch = m["details"]["family"]
            made = s.created.get(m["name"])
            info = {
                "general.architecture": arch,
                "general.parameter_count": 7615616512,
                f"{arch}.context_length": s.context_length,
            }
            shown = {
                "modelfile": "FROM scripted",
                "parameters": "temperature 0.7",
                "template": "{{ .Prompt }}",
                "details": m["details"],
                "model_info": info,
                "capabilities": ["completion", "tools"],
                "modified_at": m["modified_at"],
            }
            if made is not None:
                shown |= self._show_created(made)
            reply.json(200, shown)
        elif key == ("POST", "/api/pull"):
            return self._pull(rec, reply, body)
        elif key == ("POST", "/api/chat"):
            return self._chat(rec, reply, body)
        elif key == ("POST", "/api/generate") and s.generate:
            return self._generate(rec, reply, body)
        else:
            reply.send(404, b"404 page not found", "text/plain")
        return True

    def _blob(self, rec: Recorded, reply: Reply) -> bool:
        digest = rec.path.removeprefix(BLOBS)
        match = _DIGEST.fullmatch(digest)
        head = rec.method == "HEAD"
        if match is None:
            return self.error(
                reply, 400, "invalid digest format", content_type=GO_JSON, head_only=head
            )
        key = f"sha256:{match[1]}"
        blobs = self.script.blobs
        if head and key not in blobs:
            message = f'blob "{digest}" not found'
            return self.error(reply, 404, message, content_type=GO_JSON, head_only=True)
        if head or key in blobs:  # Ollama answers 200 without reading what was sent
            reply.send(200, b"", GO_TEXT)
            return True
        raw = reply.reader.body if isinstance(reply.reader, _BodyTap) else b""
        got = "sha256:" + hashlib.sha256(raw).hexdigest()
        if got != key:
            message = f'digest mismatch, expected "{digest}", got "{got}"'
            return self.error(reply, 400, message, content_type=GO_JSON)
        blobs[key] = raw
        reply.send(201, b"", GO_TEXT)
        return True

    def _create(self, rec: Recorded, reply: Reply, body: dict[str, Any]) -> bool:
        """POST /api/create from uploaded files: request errors are 400 before any
        output; a failure while building streams an error line (or is a 500 when
        stream is false); success ends with {"status": "success"}."""
        s = self.script
        if not isinstance(rec.body, dict):
            return self.error(reply, 400, "missing request body")
        name = str(body.get("model") or body.get("name") or "")
        files = body.get("files") or {}
        if not isinstance(files, dict):
            return self.error(reply, 400, "json: cannot unmarshal files")
        for file_name, digest in files.items():
            if _bad_file_path(file_name):
                return self.error(reply, 400, f"file path must be relative: {file_name}")
            if not _DIGEST.fullmatch(str(digest)):
                error = f"invalid digest for {file_name}: invalid digest format"
                return self.error(reply, 400, error)
        if not _MODEL_NAME.fullmatch(name):
            return self.error(reply, 400, "invalid model name")
        if not files:
            return self.error(reply, 400, "neither 'from' or 'files' was specified")
        contents: dict[str, bytes] = {}
        for file_name, digest in sorted(files.items()):
            key = "sha256:" + str(digest)[7:]
            if key not in s.blobs:
                path = f"/root/.ollama/models/blobs/sha256-{key[7:]}"
                error = (
                    f"blob not found for {file_name} (digest {digest}): "
                    f"open {path}: no such file or directory"
                )
                return self.error(reply, 400, error)
            contents[key] = s.blobs[key]
        lines: list[dict[str, Any]] = [{"status": "parsing GGUF"}]
        if not all(data.startswith(b"GGUF") for data in contents.values()):
            lines.append(self.error_object(500, "invalid file magic"))  # gguf.ReadFileMetadata
        else:
            lines += [{"status": f"using existing layer {k}"} for k in contents]
            for extra in ("template", "parameters"):
                if body.get(extra):
                    text = json.dumps(body[extra], sort_keys=True).encode()
                    digest = "sha256:" + hashlib.sha256(text).hexdigest()
                    lines.append({"status": f"creating new layer {digest}"})
            lines += [{"status": "writing manifest"}, {"status": "success"}]
            self._add_created(name, body, sum(len(d) for d in contents.values()))
        if body.get("stream", True) is False:  # waitForStream: the last line, or a 500
            if "error" in lines[-1]:
                return self.error(reply, 500, lines[-1]["error"])
            reply.json(200, lines[-1])
            return True
        reply.start("application/x-ndjson")
        for line in lines:
            reply.chunk(self.stream_item(line))
        reply.end()
        return True

    def _add_created(self, name: str, body: dict[str, Any], size: int) -> None:
        s = self.script
        manifest = json.dumps(body, sort_keys=True).encode()
        entry = model_entry(name, size=size) | {
            "digest": hashlib.sha256(manifest).hexdigest(),
            "modified_at": CREATED_AT,
        }
        # Creating an existing name replaces it, as in Ollama.
        s.models = [m for m in s.models if m["name"] != name] + [entry]
        s.created[name] = body

    def _show_created(self, body: dict[str, Any]) -> dict[str, Any]:
        params: list[str] = []
        for k, v in (body.get("parameters") or {}).items():
            for value in v if isinstance(v, list) else [v]:
                params.append(f"{k:<30} {_go_quote(value)}")
        return {
            "parameters": "\n".join(params),
            "template": body.get("template") or "{{ .Prompt }}",
            "capabilities": ["completion"],
        }

    def _pull(self, rec: Recorded, reply: Reply, body: dict[str, Any]) -> Any:
        name = str(body.get("model", ""))
        reply.start("application/x-ndjson")
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if name.startswith(("missing", "fault-")):
            lines.append(self.error_object(500, "pull model manifest: file does not exist"))
        else:
            digest = "sha256:" + "ab" * 32
            total = 4_000_000
            lines.append({"status": f"pulling {digest[7:19]}", "digest": digest, "total": total})
            for done in (1_000_000, 2_500_000, total):
                lines.append(
                    {"status": f"pulling {digest[7:19]}", "digest": digest}
                    | {"total": total, "completed": done}
                )
            lines += [{"status": s} for s in ("verifying sha256 digest", "writing manifest")]
            lines.append({"status": "success"})
            if self._find(name) is None:
                self.script.models.append(model_entry(name))
        items: list[Item] = [self.stream_item(x) for x in lines]
        delays = [i * self.script.pull_gap_ms / 1000 for i in range(len(items))]
        return self.stream(reply, rec, items, delays, [0] * len(items), reply.end)

    def _chat(self, rec: Recorded, reply: Reply, body: dict[str, Any]) -> Any:
        s = self.script
        name = body.get("model")
        fault = rec.fault = fault_of(rec, name, s.fault)
        if self._find(name) is None and not str(name).startswith("fault-"):
            return self._not_found(reply, name)
        if fault == "http503":
            msg = "server busy, please try again.  maximum pending requests exceeded"
            return self.error(reply, 503, msg)
        if fault == "hang_headers":
            return reply.hang()
        if fault == "drop":  # the server process died while handling the request
            reply.close()
            return False
        options = body.get("options") or {}
        limit = options.get("num_predict")
        limit = 64 if limit is None or limit < 0 else limit
        n_tokens = min(s.tokens, limit) if s.tokens is not None else limit
        sizes = token_plan(n_tokens, s.pattern)
        if fault in ("reset", "close", "hang", "error", "malformed"):
            sizes = sizes[: s.fault_after]
        wait_ms = self._take_slot((s.ttft_ms + max(len(sizes) - 1, 0) * s.gap_ms) / 1000)
        head = b'{"model":%s,"created_at":"%s","message":{"role":"assistant",' % (
            json.dumps(name).encode(),
            CREATED_AT.encode(),
        )
        items: list[Item] = []
        delays: list[float] = []
        tokens: list[int] = []
        pos = 0
        for i, n in enumerate(sizes):
            text = "".join(word(pos + j) for j in range(n))
            pos += n
            if i < s.thinking_chunks:
                msg = b'"content":"","thinking":%s' % json.dumps(text).encode()
            elif s.tool_call and i == len(sizes) - 1:
                call = {"function": {"name": "lookup", "arguments": {"q": text}}}
                msg = b'"content":"","tool_calls":%s' % json.dumps([call]).encode()
            else:
                msg = b'"content":%s' % json.dumps(text).encode()
            items.append(head + msg + b'},"done":false}\n')
            delays.append((wait_ms + s.ttft_ms + i * s.gap_ms) / 1000)
            tokens.append(n)
        end = (wait_ms + s.ttft_ms + max(len(sizes) - 1, 0) * s.gap_ms) / 1000
        extra: list[Item] = []
        if fault == "reset":
            extra = [reply.reset]
        elif fault == "close":
            extra = [reply.close]
        elif fault == "error":
            err = "an error was encountered while running the model: unexpected EOF"
            extra = [self.error_item(err)]
        elif fault == "malformed":
            extra = [head + b'"content":"br\n']
        elif fault != "hang":
            final = self._final(body, n_tokens, limit, wait_ms)
            extra = [head + b'"content":""},' + final + b"}\n"]
        items += extra
        delays += [end + 0.001 if fault else end] * len(extra)
        tokens += [0] * len(extra)
        reply.start("application/x-ndjson")
        if fault == "hang":
            # No end-of-body marker: the client must see a stalled stream.
            done = self.stream(reply, rec, items, delays, tokens, lambda: None)
            return self._then_hang(done, reply)
        done = self.stream(reply, rec, items, delays, tokens, reply.end)
        return done

    async def _then_hang(self, done: asyncio.Future[bool], reply: Reply) -> bool:
        await done
        return await reply.hang()

    def _generate(self, rec: Recorded, reply: Reply, body: dict[str, Any]) -> bool:
        """POST /api/generate as a tokenizer: one final object (one NDJSON line when
        streamed) whose prompt_eval_count is the scripted tokenizer's count of the
        prompt, `raw_tokens`, plus `raw_bos`; a prompt-less request only loads the
        model (done_reason "load", no counts), as in Ollama. The `http503` fault
        refuses; `omit_prompt_count` leaves the count out."""
        s = self.script
        name = body.get("model")
        if self._find(name) is None and not str(name).startswith("fault-"):
            return self._not_found(reply, name)
        if fault_of(rec, name, s.fault) == "http503":
            msg = "server busy, please try again.  maximum pending requests exceeded"
            return self.error(reply, 503, msg)
        prompt = body.get("prompt")
        final: dict[str, Any] = {"model": name, "created_at": CREATED_AT, "response": ""}
        if not prompt:
            final |= {"done": True, "done_reason": "load"}
        else:
            limit = (body.get("options") or {}).get("num_predict")
            n_out = 64 if limit is None or limit < 0 else limit
            final |= {"response": "".join(word(i) for i in range(n_out)), "done": True}
            final |= {"done_reason": "length", "total_duration": 2_000_000}
            if not s.omit_prompt_count:
                final["prompt_eval_count"] = raw_tokens(str(prompt)) + s.raw_bos
            final |= {"prompt_eval_duration": 1_000_000, "eval_count": n_out}
        if body.get("stream", True) is False:
            reply.json(200, final)
        else:
            reply.send(200, json.dumps(final).encode() + b"\n", "application/x-ndjson")
        return True

    def _take_slot(self, span_s: float) -> float:
        """With num_parallel: the ms this request waits for a free slot, and the slot
        it takes (planned from the scripted timings, so the queue is exact)."""
        s = self.script
        if not s.num_parallel:
            return 0.0
        now = time.monotonic()
        slots = getattr(self, "_slots", None)
        if slots is None or len(slots) != s.num_parallel:
            slots = self._slots = [now] * s.num_parallel
        i = min(range(len(slots)), key=slots.__getitem__)
        start = max(now, slots[i])
        slots[i] = start + span_s
        return (start - now) * 1000

    def _final(
        self, body: dict[str, Any], n_tokens: int, limit: int, wait_ms: float = 0.0
    ) -> bytes:
        s = self.script
        prompt_n = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        prompt_n = prompt_n // 4 + 1
        chunks = len(token_plan(n_tokens, s.pattern))
        ns = 1_000_000
        load = int(s.load_ms * ns)
        queue_ms = s.queue_ms + wait_ms
        prompt_eval = int(max(s.ttft_ms - s.load_ms - s.queue_ms, 0) * ns)
        eval_ = int(max(chunks - 1, 0) * s.gap_ms * ns)
        fields: dict[str, Any] = {
            "done": True,
            "done_reason": "length" if n_tokens >= limit else "stop",
            "total_duration": load + int(queue_ms * ns) + prompt_eval + eval_,
            "load_duration": load,
            "prompt_eval_count": 0 if s.omit_prompt_count else prompt_n,
            "prompt_eval_duration": prompt_eval,
            "eval_count": n_tokens,
            "eval_duration": eval_,
        }
        # Go's omitempty: a zero metric is left out of the JSON entirely.
        kept = {k: v for k, v in fields.items() if v not in (0, None)}
        return json.dumps(kept).encode()[1:-1]


def main(argv: list[str] | None = None) -> None:
    """Run the scripted Ollama server in the foreground (for benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--num-parallel", type=int, help="OLLAMA_NUM_PARALLEL (default: no limit)")
    args = parser.parse_args(argv)
    script = OllamaScript(
        num_parallel=args.num_parallel,
        ttft_ms=args.ttft_ms,
        gap_ms=args.gap_ms,
        pattern=tuple(int(x) for x in args.pattern.split(",")),
        tokens=args.tokens,
        fault=args.fault,
    )
    server = OllamaServer(script, host=args.host, port=args.port)
    if args.no_record:
        server.record_paths = set()
    asyncio.run(server.serve_forever())


if __name__ == "__main__":
    main()
