"""`python -m lib.cli matrix --recipes FILE`: Ollama's recipe, started, measured and
stopped by the tool, with the `ollama` executable replaced by the stand-in that serves
the scripted Ollama server (no Ollama can be installed here)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from lib.launch.executables import OPERATOR_VAR
from tests.scripted.ollama_standin import FAULT_VAR

REPO = Path(__file__).resolve().parents[2]
MODEL = "qwen2.5:7b-instruct-q4_K_M"


def matrix(args: list[str], standin: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, OPERATOR_VAR: str(standin)}
    env.pop(FAULT_VAR, None)
    return subprocess.run(
        [sys.executable, "-m", "lib.cli", "matrix", *args, "--db", str(tmp_path / "db.sqlite")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def standin_processes(standin: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(standin) in cmdline or "ollama_standin" in cmdline:
            found.append(proc.info["pid"])
    return found


def test_a_matrix_of_ollama_settings_runs_cell_by_cell(standin: Path, tmp_path: Path) -> None:
    recipes = [
        {"engine": "ollama", "model": MODEL, "executable": str(standin), "num_parallel": 1},
        {"engine": "ollama", "model": MODEL, "executable": str(standin), "num_parallel": 4},
        {
            "engine": "ollama",
            "model": MODEL,
            "executable": str(standin),
            "name": "broken",
            "env": {FAULT_VAR: "exit"},
        },
    ]
    file = tmp_path / "recipes.json"
    file.write_text(json.dumps({"recipes": recipes}))
    out = tmp_path / "out.json"
    result = matrix(
        [
            *("--recipes", str(file), "--concurrency", "1,4", "--requests", "8"),
            *("--max-tokens", "24", "--prompt", "Say hello.", "--output-json", str(out)),
        ],
        standin,
        tmp_path,
    )
    # A cell that did not start makes the exit code 1; the others still ran.
    assert result.returncode == 1, result.stderr
    doc = json.loads(out.read_text())
    names = [lane["name"] for lane in doc["lanes"]]
    assert names == [
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 1",
        "ollama · qwen2.5:7b-instruct-q4_K_M · parallel 4",
        "broken",
    ]
    one, four, broken = doc["lanes"]
    for lane in (one, four):
        process = lane["engine_process"]
        assert process["state"] == "stopped" and process["exit_reason"] == "stopped by servescope"
        assert process["ready_s"] > 0 and process["peak_memory_mib"] > 0
        assert process["leftover_pids"] == []
        assert lane["status"] == "completed"
        assert [lv["concurrency"] for lv in lane["levels"]] == [1, 4]
        # Memory from the first second: the first sample precedes the lane's first request.
        with sqlite3.connect(tmp_path / "db.sqlite") as conn:
            (first_send,) = conn.execute(
                "SELECT min(t_send) FROM requests WHERE run_id = ? AND lane_idx = ?",
                (doc["run_id"], names.index(lane["name"])),
            ).fetchone()
        assert process["first_sample_t"] < first_send
        assert any(s["source"] == "process" for s in lane["telemetry"])
    # The setting the recipe varied is the one that decides: 1 slot queues, 4 batch.
    ttft = {lane["name"]: lane["levels"][1]["ttft_ms"]["p50"] for lane in (one, four)}
    assert ttft[one["name"]] > 2 * ttft[four["name"]]
    assert "queues" in result.stdout and "OLLAMA_NUM_PARALLEL" in result.stdout
    # The cell that would not start: its reason, its log's last lines, failed levels.
    process = broken["engine_process"]
    assert process["state"] == "failed" and "exit code 1" in process["error"]
    assert any("address already in use" in line for line in process["log_tail"])
    assert broken["status"] == "failed"
    assert all("engine not ready" in lv["error"] for lv in broken["levels"])
    assert "[broken] did not start" in result.stdout
    assert standin_processes(standin) == []


def test_bad_recipes_and_programs_are_one_line_errors(standin: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"engine": "vllm", "model": "m", "parallel": 4}]))
    result = matrix(["--recipes", str(bad), "--prompt", "x"], standin, tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "parallel is a llama.cpp setting" in result.stderr
    shell = tmp_path / "shell.json"
    shell.write_text(json.dumps([{"engine": "ollama", "model": MODEL, "executable": "/bin/sh"}]))
    result = matrix(["--recipes", str(shell), "--prompt", "x"], standin, tmp_path)
    assert result.returncode == 2 and "SERVESCOPE_ENGINE_EXECUTABLES" in result.stderr
    assert result.stderr.count("\n") == 1
    result = matrix(["--recipes", str(tmp_path / "none.json"), "--prompt", "x"], standin, tmp_path)
    assert result.returncode == 2 and "cannot read --recipes" in result.stderr
    assert not (tmp_path / "db.sqlite").exists() or standin_processes(standin) == []


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    from tests.scripted.ollama_standin import write_executable

    folder = tmp_path / "bin"
    folder.mkdir()
    return write_executable(folder)


def test_a_capacity_search_per_cell_says_which_setting_serves_more(
    standin: Path, tmp_path: Path
) -> None:
    """Variants x settings x load with the load a capacity search: how many users each
    OLLAMA_NUM_PARALLEL serves within the TTFT target (the scripted server takes 30 ms to
    a first token, and one slot makes each extra user wait a whole answer)."""
    recipes = [
        {"engine": "ollama", "model": MODEL, "executable": str(standin), "num_parallel": n}
        for n in (1, 4)
    ]
    file = tmp_path / "recipes.json"
    file.write_text(json.dumps(recipes))
    out = tmp_path / "out.json"
    result = matrix(
        [
            *("--recipes", str(file), "--capacity", "--slo-ttft-ms", "200", "--max", "16"),
            *("--requests", "8", "--max-tokens", "24", "--prompt", "hi", "--output-json", str(out)),
        ],
        standin,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    one, four = json.loads(out.read_text())["lanes"]
    assert one["capacity"]["value"] < four["capacity"]["value"]
    assert four["capacity"]["value"] >= 4
    assert "parallel 4 serves" in result.stdout
    assert standin_processes(standin) == []
