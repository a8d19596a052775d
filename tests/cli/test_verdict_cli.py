"""The verdict end to end: `python -m lib.cli run --concurrency 1,4` against a scripted
Ollama that serves one request at a time and a scripted vLLM that serves all at once,
then `show`; the verdict lines name the queueing and the batching lane.

The scripted servers answer every request in parallel on their own; `OneAtATimeOllama`
(here, as test code) makes the Ollama one behave as OLLAMA_NUM_PARALLEL=1 does: a
request waits for the one before it, and the wait is reported as Ollama reports it,
folded into total_duration (metrics.ollama_server_timings reads it back as queue_ms).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from lib import cli
from lib.cli.verdict_lines import verdict_lines
from tests.scripted import OllamaScript, OllamaServer, OpenAIScript, OpenAIServer
from tests.scripted.core import Recorded, Reply

OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"
VLLM_MODEL = "Qwen/Qwen2.5-7B-AWQ"
TIMING: dict[str, Any] = {"ttft_ms": 30, "gap_ms": 10, "tokens": 8}


class OneAtATimeOllama(OllamaServer):
    """A scripted Ollama with one parallel slot: /api/chat requests are served in turn."""

    def __init__(self, script: OllamaScript) -> None:
        super().__init__(script)
        self._slot: asyncio.Lock | None = None

    def handle(self, rec: Recorded, reply: Reply) -> Any:
        if (rec.method, rec.path) != ("POST", "/api/chat"):
            return super().handle(rec, reply)
        return self._in_turn(rec, reply)

    async def _in_turn(self, rec: Recorded, reply: Reply) -> bool:
        if self._slot is None:
            self._slot = asyncio.Lock()  # made on the server's own loop
        async with self._slot:
            waited_s = time.perf_counter() - rec.t_recv
            rec.t_recv += waited_s  # its chunks are timed from when its turn came
            self.script.queue_ms = 1000.0 * waited_s  # this request's final chunk reports it
            keep = super().handle(rec, reply)
            return keep if isinstance(keep, bool) else await keep


def record_run(db: Path, *extra: str) -> tuple[int, str]:
    """A two-lane run at 1 and 4 users: the one-at-a-time Ollama and a batching vLLM."""
    ollama = OneAtATimeOllama(OllamaScript(**TIMING))
    vllm = OpenAIServer(OpenAIScript(models=[VLLM_MODEL], root=VLLM_MODEL, **TIMING))
    with ollama, vllm:
        code = cli.main(
            [
                "run",
                "--lane", "ollama", ollama.url, OLLAMA_MODEL,
                "--lane", "openai", vllm.base_url, VLLM_MODEL,
                "--prompt", "AI 기술에 대한 짧은 뉴스 기사를 써 주세요.",
                "--concurrency", "1,4",
                "--requests", "8",
                "--max-tokens", "8",
                "--db", str(db),
                "--quiet",
                *extra,
            ]
        )  # fmt: skip
    return code, ollama.url


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("verdict") / "s.db"
    code, _ = record_run(db)
    assert code == 0
    return db


def lines_of(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("verdict", "  setting"))]


def test_run_and_show_print_the_verdict_of_a_queueing_and_a_batching_lane(recorded, capsys):
    from lib import store

    with store.opened(recorded) as conn:
        run_id = store.list_runs(conn)[0]["run_id"]
    assert cli.main(["show", run_id, "--db", str(recorded)]) == 0
    lines = lines_of(capsys.readouterr().out)
    ollama, setting, vllm, *compared = lines
    assert ollama.startswith(
        f"verdict: ollama:{OLLAMA_MODEL}: queues: serves about 1 request at a time — at 4 users"
    )
    assert "Ollama's own queue time grows ~" in ollama
    assert setting.startswith("  setting: raise OLLAMA_NUM_PARALLEL")
    assert vllm.startswith(f"verdict: vllm:{VLLM_MODEL}: batches: at 4 users each keeps")
    assert compared[0].startswith(
        f"verdict: At 4 users, the highest level every lane ran, vllm:{VLLM_MODEL} has the "
        "highest output throughput"
    )
    assert len(compared) == 2


def test_run_prints_the_verdict_after_the_table_with_the_slo_winner(tmp_path, capsys):
    code, _ = record_run(tmp_path / "s.db", "--slo-ttft-ms", "150")
    assert code == 0
    out = capsys.readouterr().out
    lines = lines_of(out)
    assert out.index("capacity ") < out.index("verdict: ")  # below the table and capacity
    assert lines[-1] == (
        f"verdict: At TTFT ≤ 150 ms for 90% of requests, vllm:{VLLM_MODEL} serves at least "
        f"4 users at once, ollama:{OLLAMA_MODEL} 1."
    )


def test_verdict_lines_of_a_run_with_no_lane_are_empty():
    assert verdict_lines({"lanes": []}) == []
