"""Two scripted engines that behave like the seed log's pair, for the browser test.

- `QueueingOllama`: Ollama's native API with a fixed number of parallel slots; a
  request that finds every slot busy waits (Ollama's queue), so at concurrency 5 the
  latencies stack up in a staircase, and the server's own timings report the wait
  (`total_duration` includes it, as in Ollama). Answers in Korean.
- `BatchingVllm`: vLLM's OpenAI API that serves every request at once (continuous
  batching), so latency stays flat with concurrency. Its (quantized) model answers
  most Korean prompts in Chinese, the seed log's quality finding.

Run as a process: `python -m tests.browser.engines` prints
`READY ollama=<port> vllm=<port>` and serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from tests.scripted import ollama_server, openai_server
from tests.scripted.core import Recorded, Reply
from tests.scripted.ollama_server import OllamaScript, OllamaServer, model_entry
from tests.scripted.openai_server import OpenAIScript, OpenAIServer

KOREAN = (
    "인공지능",
    " 기술이",
    " 빠르게",
    " 발전하며",
    " 여러",
    " 산업에",
    " 변화를",
    " 이끌고",
    " 있습니다.",
)
CHINESE = ("人工智能", "技术", "正在", "快速", "发展，", "推动", "各个", "行业", "的变革。")

OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"
VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct-AWQ"


def _vocabulary(words: tuple[str, ...]) -> Any:
    return lambda i: words[i % len(words)]


class QueueingOllama(OllamaServer):
    """Ollama with `slots` parallel slots: later requests wait for a free one."""

    def __init__(self, script: OllamaScript, slots: int = 1, **kw: Any) -> None:
        super().__init__(script, **kw)
        self.free_at = [0.0] * slots  # perf_counter time each slot becomes free

    def _chat(self, rec: Recorded, reply: Reply, body: dict[str, Any]) -> Any:
        s = self.script
        slot = min(range(len(self.free_at)), key=self.free_at.__getitem__)
        wait_ms = max(self.free_at[slot] - rec.t_recv, 0.0) * 1000.0
        limit = (body.get("options") or {}).get("num_predict") or 64
        chunks = len(ollama_server.token_plan(limit, s.pattern))
        busy_ms = s.ttft_ms + max(chunks - 1, 0) * s.gap_ms
        self.free_at[slot] = rec.t_recv + (wait_ms + busy_ms) / 1000.0
        base_ttft = s.ttft_ms
        # The script is read synchronously while this request's stream is planned, so
        # shifting it for one request and restoring it is safe on the loop thread.
        s.ttft_ms, s.queue_ms = base_ttft + wait_ms, wait_ms
        ollama_server.word = _vocabulary(KOREAN)
        try:
            return super()._chat(rec, reply, body)
        finally:
            s.ttft_ms, s.queue_ms = base_ttft, 0.0


class BatchingVllm(OpenAIServer):
    """vLLM serving all requests together; requests 2–5 of every 5 drift to Chinese."""

    def __init__(self, script: OpenAIScript, **kw: Any) -> None:
        super().__init__(script, **kw)
        self.chats = 0

    def _chat(self, rec: Recorded, reply: Reply) -> Any:
        self.chats += 1
        drift = self.chats % 5 != 1
        openai_server.word = _vocabulary(CHINESE if drift else KOREAN)
        return super()._chat(rec, reply)


def make_servers(
    ttft_ms: float = 120.0, gap_ms: float = 25.0, slots: int = 1
) -> tuple[QueueingOllama, BatchingVllm]:
    """The two servers (not started)."""
    ollama = QueueingOllama(
        OllamaScript(
            models=[
                model_entry(OLLAMA_MODEL),
                model_entry("llama3.2:3b", quant="Q8_0", params="3.2B", family="llama"),
            ],
            ttft_ms=ttft_ms,
            gap_ms=gap_ms,
            version="0.9.0",
        ),
        slots=slots,
    )
    vllm = BatchingVllm(
        OpenAIScript(
            flavor="vllm",
            models=[VLLM_MODEL],
            ttft_ms=ttft_ms,
            gap_ms=gap_ms,
            version="0.9.1",
            max_model_len=32768,
            root=VLLM_MODEL,
        )
    )
    for server in (ollama, vllm):
        server.record_paths = set()  # nobody reads the log; keep memory flat
    return ollama, vllm


async def _serve(ollama: QueueingOllama, vllm: BatchingVllm) -> None:
    await ollama._open()
    await vllm._open()
    print(f"READY ollama={ollama.port} vllm={vllm.port}", flush=True)
    while True:
        await asyncio.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    """Serve both engines on 127.0.0.1 until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft-ms", type=float, default=120.0)
    parser.add_argument("--gap-ms", type=float, default=25.0)
    parser.add_argument("--slots", type=int, default=1, help="Ollama parallel slots")
    args = parser.parse_args(argv)
    ollama, vllm = make_servers(args.ttft_ms, args.gap_ms, args.slots)
    asyncio.run(_serve(ollama, vllm))


if __name__ == "__main__":
    main()
