"""The CLI contract end to end against scripted servers: output, exit codes, bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from lib import cli, store

LEVEL_KEYS = {
    "concurrency",
    "completed",
    "failed",
    "duration_s",
    "request_throughput",
    "output_throughput",
    "total_output_tokens",
    "ttft_ms",
    "tpot_ms",
    "itl_ms",
    "e2el_ms",
    "requests",
}
REQUEST_KEYS = {
    "index",
    "prompt",
    "ttft_ms",
    "tpot_ms",
    "e2el_ms",
    "prompt_tokens",
    "output_tokens",
    "output_text",
    "finish_reason",
    "error",
    "server",
}


@pytest.fixture
def vllm(scripted):
    return scripted.openai(ttft_ms=40, gap_ms=5, models=["qwen-awq", "fault-http503"])


@pytest.fixture
def ollama(scripted):
    return scripted.ollama(ttft_ms=40, gap_ms=5)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_two_lanes_write_the_contract_document(tmp_path, capsys, vllm, ollama):
    db, out_json = tmp_path / "s.db", tmp_path / "r.json"
    code, out, err = run_cli(
        capsys,
        "run",
        "--lane", "ollama", ollama.url, "qwen2.5:7b-instruct-q4_K_M",
        "--lane", "openai", vllm.base_url, "qwen-awq",
        "--prompt", "AI 기술에 대한 짧은 뉴스 기사를 써 주세요.",
        "--concurrency", "1,4",
        "--requests", "6",
        "--warmup", "1",
        "--max-tokens", "12",
        "--seed", "7",
        "--label", "seed repro",
        "--db", str(db),
        "--output-json", str(out_json),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert {"run_id", "created_at", "settings", "lanes"} <= doc.keys()
    assert doc["settings"]["seed"] == 7 and doc["settings"]["max_tokens"] == 12
    assert [lane["engine"] for lane in doc["lanes"]] == ["ollama", "openai"]
    ollama_lane, vllm_lane = doc["lanes"]
    assert ollama_lane["engine_info"]["kind"] == "ollama"
    assert ollama_lane["engine_info"]["quantization"] == "Q4_K_M"
    assert vllm_lane["engine_info"]["kind"] == "vllm"
    for lane in doc["lanes"]:
        assert [lv["concurrency"] for lv in lane["levels"]] == [1, 4]
        for level in lane["levels"]:
            assert level.keys() >= LEVEL_KEYS
            # Warm-ups are stored apart, never in a level's statistics.
            assert (level["completed"], level["failed"]) == (6, 0)
            assert len(level["requests"]) == 6
            assert level["total_output_tokens"] == 6 * 12  # server counts
            assert level["ttft_ms"]["p50"] >= 40.0  # never below the server's own delay
            for req in level["requests"]:
                assert req.keys() >= REQUEST_KEYS
                assert req["ttft_ms"] < req["e2el_ms"]
        assert len(lane["warmup"]) == 1
    assert ollama_lane["levels"][0]["requests"][0]["server"]["eval_ms"] > 0
    assert vllm_lane["levels"][0]["requests"][0]["server"] is None
    assert f"run {doc['run_id']} (completed)" in out
    # Telemetry sampled beside the run: Ollama's /api/ps and vLLM's /metrics.
    ollama_names = {(t["source"], t["name"]) for t in ollama_lane["telemetry"]}
    vllm_names = {(t["source"], t["name"]) for t in vllm_lane["telemetry"]}
    assert ("ollama", "size_vram") in ollama_names
    assert ("vllm", "kv_cache_usage_perc") in vllm_names
    assert all(t["t"] >= -1.0 for t in vllm_lane["telemetry"])
    # The same explicit sampling settings reached both engines.
    ollama_bodies = [r.body for r in ollama.recorded("/api/chat")]
    vllm_bodies = [r.body for r in vllm.recorded("/v1/chat/completions")]
    assert len(ollama_bodies) == len(vllm_bodies) == 13
    for body in ollama_bodies:
        opts = body["options"]
        assert (opts["temperature"], opts["top_p"], opts["seed"], opts["num_predict"]) == (
            0.0,
            1.0,
            7,
            12,
        )
    for body in vllm_bodies:
        assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (
            0.0,
            1.0,
            7,
            12,
        )
        assert body["stream_options"] == {"include_usage": True}


def test_list_and_show(tmp_path, capsys, vllm):
    db = tmp_path / "s.db"
    code, _, err = run_cli(
        capsys, "run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "qwen-awq",
        "--prompt", "hi", "--requests", "2", "--max-tokens", "4", "--db", str(db), "--label", "L",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = run_cli(capsys, "list", "--db", str(db), "--json")
    (line,) = json.loads(out)
    assert line["label"] == "L" and line["status"] == "completed"
    code, out, _ = run_cli(capsys, "show", line["run_id"], "--db", str(db))
    assert code == 0 and "vllm:qwen-awq" in out and "ttft_p50_ms" in out
    code, out, _ = run_cli(capsys, "show", line["run_id"], "--db", str(db), "--json")
    assert json.loads(out)["run_id"] == line["run_id"]
    code, _, err = run_cli(capsys, "show", "nope", "--db", str(db))
    assert code == 2 and "no run 'nope'" in err


def test_failed_requests_exit_1_and_are_kept(tmp_path, capsys, vllm):
    db, out_json = tmp_path / "s.db", tmp_path / "r.json"
    code, _, err = run_cli(
        capsys, "run", "--engine", "openai", "--base-url", vllm.base_url, "--model",
        "fault-http503", "--prompt", "hi", "--requests", "3", "--warmup", "0",
        "--max-tokens", "4", "--db", str(db), "--output-json", str(out_json),
    )  # fmt: skip
    assert code == 1
    level = json.loads(out_json.read_text())["lanes"][0]["levels"][0]
    assert (level["completed"], level["failed"]) == (0, 3)
    assert all("503" in r["error"] and "\n" not in r["error"] for r in level["requests"])
    assert "request failed" in err


BAD_INPUT = [
    (["--concurrency", "0"], "concurrency 0 is out of range"),
    (["--concurrency", "5000"], "out of range 1..1024"),
    (["--concurrency", "a,b"], "comma-separated"),
    (["--max-tokens", "-3"], "max tokens must be"),
    (["--requests", "0"], "requests per level"),
    (["--timeout", "0"], "timeout"),
    (["--top-p", "0"], "top-p"),
    (["--prompt", "   "], "--prompt is empty"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUT)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, vllm, extra, message):
    db = tmp_path / "s.db"
    argv = ["run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "qwen-awq"]
    if "--prompt" not in extra:
        argv += ["--prompt", "hi"]
    code, _, err = run_cli(capsys, *argv, *extra, "--db", str(db))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not db.exists() or _runs(db) == 0  # nothing half-written


def _runs(db) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def test_prompt_file_errors_exit_2(tmp_path, capsys, vllm):
    base = ["run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "qwen-awq"]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81 not text")
    for path in (empty, binary, tmp_path / "missing.txt"):
        code, _, err = run_cli(
            capsys, *base, "--prompt-file", str(path), "--db", str(tmp_path / "d")
        )
        assert code == 2 and str(path.name) in err and len(err.strip().splitlines()) == 1


def test_unknown_model_and_unreachable_engine_exit_2(tmp_path, capsys, vllm, ollama):
    db = tmp_path / "s.db"
    cases = [
        ("openai", vllm.base_url, "no-such-model", "no-such-model"),
        ("ollama", ollama.url, "qwen9:404b", "qwen9:404b"),
        ("openai", "http://127.0.0.1:9/v1", "m", "127.0.0.1:9"),
        ("ollama", "ftp://example", "m", "URL"),
    ]
    for engine, url, model, expected in cases:
        code, _, err = run_cli(
            capsys, "run", "--engine", engine, "--base-url", url, "--model", model,
            "--prompt", "hi", "--db", str(db),
        )  # fmt: skip
        assert code == 2, (engine, url, err)
        assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not db.exists() or _runs(db) == 0


def test_mixing_single_lane_and_lane_flags_is_refused(capsys, vllm):
    code, _, err = run_cli(
        capsys, "run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "m",
        "--lane", "openai", vllm.base_url, "m", "--prompt", "x",
    )  # fmt: skip
    assert code == 2 and "not both" in err


def test_quality_command_reads_stdin():
    answer = '{"title": "人工智能技术", "content": "最近人工智能技术发展迅速，各行业都在变化。"}'
    proc = subprocess.run(
        [sys.executable, "-m", "lib.cli", "quality", "--expect-lang", "ko", "--expect-json",
         "title,content"],
        input=answer, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["lang_drift"] is True and verdict["json_valid"] is True
    assert {"lang", "flags"} <= verdict.keys()


def test_gpu_command_is_clean_without_a_gpu():
    proc = subprocess.run(
        [sys.executable, "-m", "lib.cli", "gpu", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stderr == ""
    snapshot = json.loads(proc.stdout)
    assert snapshot["available"] in (True, False)
    if not snapshot["available"]:
        assert snapshot["reason"]


def test_module_entry_point_usage_error_is_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "lib.cli", "run", "--engine", "vllm"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "invalid choice" in proc.stderr


def test_db_default_rule_follows_env(tmp_path, capsys, monkeypatch, vllm):
    monkeypatch.setenv("SERVESCOPE_DB", str(tmp_path / "env.db"))
    code, _, err = run_cli(
        capsys, "run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "qwen-awq",
        "--prompt", "hi", "--requests", "1", "--warmup", "0", "--max-tokens", "2",
    )  # fmt: skip
    assert code == 0, err
    with store.opened() as conn:
        assert len(store.list_runs(conn)) == 1


def test_report_and_export_commands(tmp_path, capsys, vllm):
    db = tmp_path / "s.db"
    code, _, err = run_cli(
        capsys, "run", "--engine", "openai", "--base-url", vllm.base_url, "--model", "qwen-awq",
        "--prompt", "hi", "--concurrency", "1,2", "--requests", "2", "--max-tokens", "4",
        "--db", str(db),
    )  # fmt: skip
    assert code == 0, err
    run_id = json.loads(run_cli(capsys, "list", "--db", str(db), "--json")[1])[0]["run_id"]
    html, png = tmp_path / "r.html", tmp_path / "card.png"
    code, _, err = run_cli(
        capsys, "report", run_id, "--html", str(html), "--png", str(png), "--db", str(db)
    )
    assert code == 0, err
    assert html.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for flag, name in (("--csv", "r.csv"), ("--parquet", "r.parquet"), ("--json", "r.json")):
        code, _, err = run_cli(
            capsys, "export", run_id, flag, str(tmp_path / name), "--db", str(db)
        )
        assert code == 0, err
        assert (tmp_path / name).stat().st_size > 0
    code, _, err = run_cli(
        capsys, "export", "nope", "--csv", str(tmp_path / "x.csv"), "--db", str(db)
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        capsys, "report", run_id, "--concurrency", "64", "--png", str(png), "--db", str(db)
    )
    assert code == 2 and "64" in err
