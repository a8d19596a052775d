"""A tiny HTTP/1.1 server on plain asyncio streams, for scripted engine servers.

Why not a web framework: the tests need exact control over bytes, timing and faults
(half-sent bodies, resets, malformed lines), and the benchmark needs tens of
thousands of chunks per second from one core. Streamed chunks are written from
`loop.call_at` callbacks straight to the transport: no task wakes per chunk.

Every request is recorded (`ScriptedServer.requests`) with its parsed JSON body,
the perf_counter time it was fully received and the times each output chunk was
written, so tests and benchmarks compare the client's view with the truth.
perf_counter and the loop clock are both CLOCK_MONOTONIC on Linux, so these times
are comparable across threads and processes on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# reset: TCP RST mid-stream; close: FIN mid-body; drop: FIN before any response;
# hang: stall mid-stream; hang_headers: never answer; error: an error object mid-stream;
# malformed: a broken line mid-stream; http503: refuse with the engine's 503 body.
FAULTS = ("reset", "close", "drop", "hang", "hang_headers", "error", "malformed", "http503")

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized"}
_REASONS |= {404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Recorded:
    """One request as the server saw it, plus the truth about what it sent back."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it is not JSON
    t_recv: float  # perf_counter when the whole request had arrived
    t_head: float = 0.0  # perf_counter when its request line was read
    fault: str | None = None
    sent: list[float] = field(default_factory=list)  # output-chunk write times
    tokens: list[int] = field(default_factory=list)  # tokens in each output chunk

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "t_recv": self.t_recv,
            "t_head": self.t_head,
            "fault": self.fault,
            "sent": self.sent,
            "tokens": self.tokens,
        }


class Reply:
    """Writes one HTTP response on a connection; streamed bodies use chunked encoding."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.transport = writer.transport
        self.streaming = False
        self.answered = False  # a status line was written

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        head_only: bool = False,
    ) -> None:
        """A whole response. With `head_only` the headers give the body's length but the
        body is not sent, as Go's net/http answers HEAD (a body there would be read as
        the start of the next response)."""
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.transport.write(head.encode() + (b"" if head_only else body))
        self.answered = True

    def json(
        self,
        status: int,
        obj: Any,
        content_type: str = "application/json",
        head_only: bool = False,
    ) -> None:
        self.send(status, json.dumps(obj).encode(), content_type, head_only)

    def start(self, content_type: str, status: int = 200) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"content-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self.transport.write(head.encode())
        self.streaming = self.answered = True

    def chunk(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"0\r\n\r\n")

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), as a crashed server would."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def close(self) -> None:
        """Close cleanly at TCP level but mid-body: the client sees a truncated body."""
        self.transport.close()

    async def hang(self) -> bool:
        """Send nothing more until the client gives up (EOF) or the server stops."""
        await self.reader.read()
        return False


Item = bytes | Callable[[], None]


class Stream:
    """A scheduled streamed body: item i is written at `due[i]` (loop clock).

    `tokens[i] > 0` marks an output chunk (its write time is recorded in `rec.sent`).
    A callable item is a fault (reset, close, hang): it runs and the stream ends
    there. `then` runs after the last item.
    """

    def __init__(
        self,
        reply: Reply,
        rec: Recorded,
        items: Sequence[Item],
        due: Sequence[float],
        tokens: Sequence[int],
        then: Callable[[], None],
        done: asyncio.Future[bool],
    ) -> None:
        self.reply, self.rec, self.items, self.due, self.tokens = reply, rec, items, due, tokens
        self.then, self.done, self.i = then, done, 0

    def schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_at(self.due[0], self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.reply.transport.is_closing():
            self._finish(False)
            return
        now = loop.time()
        # Write everything that is due (several items when the loop ran late),
        # recording the true write time of each output chunk.
        while self.i < len(self.items) and self.due[self.i] <= now + 0.0002:
            item = self.items[self.i]
            if callable(item):
                item()
                self._finish(False)
                return
            if self.tokens[self.i]:
                self.rec.sent.append(time.perf_counter())
                self.rec.tokens.append(self.tokens[self.i])
            self.reply.chunk(item)
            self.i += 1
        if self.i < len(self.items):
            loop.call_at(self.due[self.i], self._tick, loop)
            return
        try:
            self.then()
        finally:
            self._finish(True)

    def _finish(self, keep_alive: bool) -> None:
        if not self.done.done():
            self.done.set_result(keep_alive and not self.reply.transport.is_closing())


class ScriptedServer:
    """Base class: parses requests, records them, routes to `handle`.

    Subclasses implement `handle(rec, reply) -> bool | Awaitable[bool]` returning
    whether the connection may be kept alive. Runs in a background thread
    (`start()`/`stop()`, or as a context manager) or in the foreground
    (`serve_forever`) for a subprocess.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.requests: list[Recorded] = []
        self.record_paths: set[str] | None = None  # None = record every path
        # Close each connection after its response, without saying so in a header, as
        # llama-server does after a streamed answer.
        self.close_after_response = False
        # Listen with SO_REUSEPORT: one of several processes serving the same port, the
        # kernel spreading new connections over them (see serve_processes).
        self.reuse_port = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()

    # -- lifecycle ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, backlog=2048, reuse_port=self.reuse_port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        """Serve until cancelled (subprocess mode)."""
        await self._open()
        print(f"READY {self.port}", flush=True)
        assert self._server is not None
        await self._server.serve_forever()

    def start(self) -> ScriptedServer:
        """Serve from a daemon thread with its own event loop; returns when listening."""

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._open())
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"scripted-{id(self):x}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def stop(self) -> None:
        """Stop the background thread, aborting open (e.g. hanging) connections."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests ----------------------------------------------------------------
    def recorded(self, path: str) -> list[Recorded]:
        """Requests received on `path`, oldest first."""
        return [r for r in list(self.requests) if r.path == path]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                t_head = time.perf_counter()
                if not line.strip():
                    break
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    key, _, value = h.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                size = int(headers.get("content-length", 0))
                raw = await reader.readexactly(size) if size else b""
                t_recv = time.perf_counter()
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                path = target.split("?", 1)[0]
                rec = Recorded(method, path, headers, body, t_recv, t_head)
                if self.record_paths is None or path in self.record_paths:
                    self.requests.append(rec)
                reply = Reply(reader, writer)
                if path.startswith("/_scripted/"):
                    keep = self._control(rec, reply)
                else:
                    try:
                        keep = self.handle(rec, reply)
                        if not isinstance(keep, bool):
                            keep = await keep
                    except ConnectionError:
                        raise  # the client went away: nothing to answer
                    except Exception as exc:  # the one place a handler's failure is answered
                        keep = self.failed(reply, exc)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
                if self.close_after_response:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    def _control(self, rec: Recorded, reply: Reply) -> bool:
        # Out-of-process access to the recorded truth, for the benchmark.
        if rec.path == "/_scripted/requests":
            reply.json(200, [r.to_dict() for r in list(self.requests) if r is not rec])
        elif rec.path == "/_scripted/reset":
            self.requests.clear()
            reply.json(200, {"ok": True})
        else:
            reply.json(404, {"error": "unknown control path"})
        return True

    def handle(self, rec: Recorded, reply: Reply) -> Any:  # bool | Awaitable[bool]
        raise NotImplementedError

    # -- errors: one path for every error a scripted server writes ----------------
    # A subclass speaks its engine's dialect by overriding `error_object` (the JSON
    # error) and `stream_item` (how a JSON object is framed in a streamed body).

    def error_object(self, status: int, message: str) -> dict[str, Any]:
        """The engine's JSON error for `message` (Ollama's `{"error": message}`)."""
        return {"error": message}

    def stream_item(self, obj: Any) -> bytes:
        """A JSON object as one item of a streamed body (an NDJSON line)."""
        return json.dumps(obj).encode() + b"\n"

    def error(
        self,
        reply: Reply,
        status: int,
        message: str,
        *,
        content_type: str = "application/json",
        head_only: bool = False,
        **extra: Any,
    ) -> bool:
        """Answer with the engine's error object (top-level `extra` fields after it);
        the connection is kept alive."""
        reply.json(status, self.error_object(status, message) | extra, content_type, head_only)
        return True

    def error_item(self, message: str, status: int = 500) -> bytes:
        """The engine's error object as an item of a streamed body (a mid-stream error)."""
        return self.stream_item(self.error_object(status, message))

    def failed(self, reply: Reply, exc: Exception) -> bool:
        """A handler raised: its traceback goes to stderr (the test's captured output) and
        the client gets the engine's 500, or a reset when a response was already begun."""
        traceback.print_exception(exc)
        if reply.answered:
            reply.reset()
            return False
        return self.error(reply, 500, f"scripted server failed: {type(exc).__name__}: {exc}")

    # -- helpers for subclasses --------------------------------------------------
    def stream(
        self,
        reply: Reply,
        rec: Recorded,
        items: Sequence[Item],
        delays: Sequence[float],
        tokens: Sequence[int],
        then: Callable[[], None],
    ) -> asyncio.Future[bool]:
        """Write `items` at `delays` seconds after the request arrived (absolute plan,
        so lateness never accumulates); the future says whether to keep alive."""
        loop = asyncio.get_running_loop()
        # rec.t_recv is perf_counter; the loop clock is the same monotonic clock.
        base = loop.time() - (time.perf_counter() - rec.t_recv)
        done: asyncio.Future[bool] = loop.create_future()
        if not items:
            then()
            done.set_result(True)
            return done
        Stream(reply, rec, items, [base + d for d in delays], tokens, then, done).schedule(loop)
        return done


def fault_of(rec: Recorded, model: str | None, default: str | None) -> str | None:
    """The fault for this request: header `x-scripted-fault`, a model named
    `fault-<name>`, else the server's default."""
    if fault := rec.headers.get("x-scripted-fault"):
        return fault
    if model and model.startswith("fault-"):
        return model.removeprefix("fault-")
    return default


def token_plan(n_tokens: int, pattern: Sequence[int]) -> list[int]:
    """Split n tokens into chunks following the repeating pattern (e.g. 1, 2)."""
    sizes: list[int] = []
    left, i = n_tokens, 0
    while left > 0:
        k = min(pattern[i % len(pattern)], left)
        sizes.append(k)
        left -= k
        i += 1
    return sizes


def word(i: int) -> str:
    """Text of token i: short words with some Korean, so multibyte text is exercised."""
    return ("안녕", " tok", "en", " 하세요", " x")[i % 5]


_VOCAB = sorted({word(i) for i in range(5)}, key=len, reverse=True)


def count_tokens(text: str) -> int:
    """The scripted tokenizer: the words of `word` are one token each (longest match
    first), any other character is a token of its own."""
    n = i = 0
    while i < len(text):
        i += next((len(w) for w in _VOCAB if text.startswith(w, i)), 1)
        n += 1
    return n


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """CLI flags shared by the scripted servers' subprocess entry points."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=150.0)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--pattern", default="1,2", help="tokens per chunk, repeating")
    parser.add_argument("--tokens", type=int, default=None, help="output length (default max)")
    parser.add_argument("--fault", choices=FAULTS, default=None)
    parser.add_argument("--no-record", action="store_true", help="keep no request log")


def add_process_args(parser: argparse.ArgumentParser) -> None:
    """`--processes N`: serve from N processes on one port (a benchmark's server must not
    be the bottleneck, and one asyncio process tops out near one core)."""
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="serve from N processes, each listening on the port with SO_REUSEPORT "
        "(the request log, /_scripted/requests, is then per process)",
    )
    # Set by serve_processes for its children: listen on a port the parent holds.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def serve(server: ScriptedServer, args: argparse.Namespace, module: str, argv: list[str]) -> None:
    """Run a scripted server's subprocess entry point: in this process, or as the parent
    of `args.processes` copies of `module` started with the same `argv`."""
    if args.processes > 1:
        raise SystemExit(serve_processes(module, argv, args.processes, args.host, args.port))
    server.reuse_port = args.reuse_port
    asyncio.run(server.serve_forever())


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A child's preexec_fn: SIGTERM when the parent dies, even by SIGKILL, so that no
    orphan keeps serving the port."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return arm


def serve_processes(module: str, argv: list[str], n: int, host: str, port: int) -> int:
    """Start `n` children of `python -m module argv` listening on one port with
    SO_REUSEPORT, print `READY <port>` once every child listens, and stay until
    SIGTERM/SIGINT (the children are stopped with it) or until a child exits (the
    others are stopped too: a server silently short of a process would skew a
    benchmark). Returns the exit status."""
    # Hold the port (port 0: pick one) with a bound, never listening SO_REUSEPORT socket
    # until the children listen on it; a socket that does not listen gets no connection.
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    port = holder.getsockname()[1]
    cmd = [sys.executable, "-m", module, *argv]
    cmd += ["--port", str(port), "--processes", "1", "--reuse-port"]  # the last ones win
    children: list[subprocess.Popen[str]] = []

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    try:
        for _ in range(n):
            child = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent(os.getpid())
            )
            children.append(child)
            assert child.stdout is not None
            line = child.stdout.readline()  # blocks until it listens (or exits)
            if not line.startswith("READY "):
                print(f"scripted server process {child.pid} did not start", file=sys.stderr)
                return 1
        holder.close()
        print(f"READY {port}", flush=True)
        pid, wait_status = os.wait()  # returns when a child exits; SIGTERM raises here
        code = os.waitstatus_to_exitcode(wait_status)
        print(f"scripted server process {pid} exited ({code})", file=sys.stderr)
        status = 1
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 0
    finally:
        holder.close()
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return status
