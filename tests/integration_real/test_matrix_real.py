"""The matrix on the real model: servescope starts each sandbox variant itself, measures it
from its first second, stops it, and starts the next (issue "Variants").

vLLM runs with --enforce-eager here: its start-up on 2 cores drops from about 2 min to
about 1 min (no graph compilation); the engine, the model and the API are the same.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from lib.core.recipes import LLAMA_CPP, VLLM, cross, name_cells
from lib.launch import phases
from lib.launch.engine_process import TOKEN_VAR
from sandbox.pypi_models import DEFAULT
from tests.integration.conftest import REPO, home_env, home_for

pytestmark = [pytest.mark.engines, pytest.mark.timeout(1800)]

PROMPT = "한국어로 두 문장으로 자기소개를 해 주세요."


def sandbox_env() -> dict[str, str]:
    """The environment of the real model's test home (tests/integration/conftest.py)."""
    return home_env(home_for(DEFAULT), DEFAULT)


def matrix(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "matrix.json"
    command = [sys.executable, "-m", "lib.cli", "matrix", *args]
    command += ["--db", str(tmp_path / "db.sqlite"), "--output-json", str(out)]
    result = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert out.exists(), result.stderr[-3000:]
    return result, json.loads(out.read_text(encoding="utf-8"))


def engine_processes_left() -> list[int]:
    """Live processes started by any matrix (they carry its token variable)."""
    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            environ = proc.environ()
        except psutil.Error:
            continue
        if TOKEN_VAR in environ and proc.status() != psutil.STATUS_ZOMBIE:
            left.append(proc.pid)
    return left


def first_send(db: Path, run_id: str, lane_idx: int) -> float:
    with sqlite3.connect(db) as conn:
        (t,) = conn.execute(
            "SELECT min(t_send) FROM requests WHERE run_id = ? AND lane_idx = ?",
            (run_id, lane_idx),
        ).fetchone()
    return float(t)


def test_vllm_and_llama_cpp_variants_started_measured_and_stopped(
    real_engines: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sandbox_env()
    for key, value in env.items():
        if key.startswith("SERVESCOPE_SANDBOX"):
            monkeypatch.setenv(key, value)
    from sandbox.recipes import variants

    found, why = variants(build=False)
    assert why is None
    stored = next(r for r in found if r.engine == VLLM)  # the dtype its weights are stored in
    eager = cross([stored], {"max_num_seqs": [1, 4]})
    for recipe in eager:
        recipe.extra_args = ["--enforce-eager"]
    llama = [r for r in found if r.engine == LLAMA_CPP]
    cells = name_cells([*eager, *llama])
    file = tmp_path / "recipes.json"
    file.write_text(json.dumps([c.to_dict() for c in cells]), encoding="utf-8")

    result, doc = matrix(
        tmp_path,
        env,
        *("--recipes", str(file), "--concurrency", "1,4", "--requests", "8"),
        *("--max-tokens", "32", "--temperature", "0", "--prompt", PROMPT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = [lane["name"] for lane in doc["lanes"]]
    assert names == [c.name for c in cells] and len(names) == 5
    assert names[0].endswith("seqs 1") and "Q8_0" in names[3]
    for idx, lane in enumerate(doc["lanes"]):
        process = lane["engine_process"]
        assert process["state"] == "stopped", (lane["name"], process["error"])
        assert process["exit_reason"] == "stopped by servescope"
        assert process["leftover_pids"] == [] and process["ready_s"] > 0
        assert Path(process["log"]).is_file() and process["log_tail"]
        assert lane["status"] == "completed"
        # Memory from the first second, in the order the engine went through it.
        assert process["first_sample_t"] < first_send(tmp_path / "db.sqlite", doc["run_id"], idx)
        steps = {p["phase"]: p for p in process["phases"]}
        order = [phases.STARTED, phases.WEIGHTS, phases.KV_CACHE, phases.READY]
        order += [phases.FIRST_REQUEST, phases.IDLE, phases.STOPPED]
        assert list(steps) == order, (lane["name"], list(steps))
        assert steps[phases.STARTED]["rss_mib"] < 100 < steps[phases.WEIGHTS]["rss_mib"]
        assert steps[phases.WEIGHTS]["rss_mib"] <= steps[phases.KV_CACHE]["rss_mib"]
        assert process["peak_memory_mib"] >= steps[phases.READY]["rss_mib"]
        assert sum(s["source"] == "process" for s in lane["telemetry"]) >= 4
    # vLLM's KV cache (1 GiB here) shows as its own step, as in the seed's memory row.
    kv = {p["phase"]: p["rss_mib"] for p in doc["lanes"][0]["engine_process"]["phases"]}
    assert kv[phases.KV_CACHE] - kv[phases.WEIGHTS] > 500
    # The setting the cells vary decides the behaviour: 1 sequence queues, 4 batch.
    ttft = [lane["levels"][1]["ttft_ms"]["p50"] for lane in doc["lanes"][:2]]
    assert ttft[0] > 2 * ttft[1], ttft
    assert engine_processes_left() == []


def test_the_sandbox_variants_by_name(real_engines: dict[str, Any], tmp_path: Path) -> None:
    result, doc = matrix(
        tmp_path,
        sandbox_env(),
        *("--variants", "sandbox", "--engines", "llama.cpp", "--only", "Q4_0"),
        *("--concurrency", "1", "--requests", "3", "--max-tokens", "16", "--prompt", PROMPT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (lane,) = doc["lanes"]
    assert lane["name"] == "llama.cpp · Q4_0"
    assert lane["engine_process"]["recipe"]["executable"] == "sandbox"
    assert "[llama.cpp · Q4_0] engine ready in" in result.stderr
    assert "[llama.cpp · Q4_0] ready in" in result.stdout
    assert engine_processes_left() == []
    assert os.path.basename(lane["engine_process"]["log"]) == "lane-0.log"
