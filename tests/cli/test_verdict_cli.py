"""The verdict end to end: `python -m lib.cli run --concurrency 1,4` against a scripted
Ollama with one parallel slot (OllamaScript.num_parallel, as OLLAMA_NUM_PARALLEL=1: a
request waits for the one before it, and Ollama reports the wait folded into
total_duration) and a scripted vLLM that serves all at once, then `show`; the verdict
lines name the queueing and the batching lane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lib import cli
from lib.cli.verdict_lines import verdict_lines
from tests.scripted import OllamaScript, OllamaServer, OpenAIScript, OpenAIServer

OLLAMA_MODEL = "qwen2.5:7b-instruct-q4_K_M"
VLLM_MODEL = "Qwen/Qwen2.5-7B-AWQ"
TIMING: dict[str, Any] = {"ttft_ms": 30, "gap_ms": 10, "tokens": 8}


def record_run(db: Path, *extra: str, slots: int = 1) -> tuple[int, str]:
    """A two-lane run at 1 and 4 users: an Ollama with `slots` parallel slots and a
    batching vLLM."""
    ollama = OllamaServer(OllamaScript(num_parallel=slots, **TIMING))
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


def test_an_ollama_with_two_slots_partly_batches(tmp_path, capsys):
    code, _ = record_run(tmp_path / "s.db", slots=2)
    assert code == 0
    ollama = lines_of(capsys.readouterr().out)[0]
    assert ollama.startswith(
        f"verdict: ollama:{OLLAMA_MODEL}: partly batches: serves about 2 requests at a time"
    )
