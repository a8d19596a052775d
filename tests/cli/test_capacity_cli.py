"""`run --rate` and `capacity` end to end against scripted servers whose limits are known.

The scripted vLLM adds 50 ms to a request's TTFT for every other request in flight; the
scripted Ollama serves one stream at a time (OLLAMA_NUM_PARALLEL=1), so each waits for
the ones before it. At a TTFT target their capacities are exact numbers of users.
"""

from __future__ import annotations

import json

import pytest

from lib import cli
from tests.conftest import OLLAMA_MODEL
from tests.scripted.ollama_server import model_entry


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def crowded(scripted):
    """TTFT = 20 ms + 50 ms per other request in flight: at most 5 users within 230 ms."""
    return scripted.openai(
        ttft_ms=20, ttft_per_inflight_ms=50, gap_ms=5, tokens=4, models=["crowded"]
    )


@pytest.fixture
def one_slot(scripted):
    """One stream at a time, 80 ms each: user k waits (k-1) x 80 ms; 4 users within 300 ms."""
    return scripted.ollama(
        num_parallel=1, ttft_ms=50, gap_ms=10, tokens=4, models=[model_entry(OLLAMA_MODEL)]
    )


def test_capacity_search_finds_the_known_limits(tmp_path, capsys, crowded, one_slot):
    out_json = tmp_path / "capacity.json"
    code, out, err = run_cli(
        capsys,
        "capacity",
        "--lane", "openai", crowded.base_url, "crowded",
        "--lane", "ollama", one_slot.url, OLLAMA_MODEL,
        "--prompt", "Say hi.", "--max-tokens", 4, "--requests", 12, "--warmup", 0,
        "--slo-ttft-ms", 230, "--max", 16,
        "--db", tmp_path / "s.db", "--output-json", out_json, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out_json.read_text())
    vllm, ollama = document["lanes"]
    capacity = vllm["capacity"]
    assert capacity["value"] == 5 and capacity["mode"] == "concurrency"
    assert capacity["slo"] == {"ttft_ms": 230.0} and capacity["target"] == 0.9
    # Doubling to the first miss (8), then halving the gap: every level tried is kept.
    assert [lv["concurrency"] for lv in vllm["levels"]] == [1, 2, 4, 5, 6, 8]
    assert [(x["load"], x["passed"]) for x in capacity["levels"]] == [
        (1, True), (2, True), (4, True), (5, True), (6, False), (8, False),
    ]  # fmt: skip
    assert capacity["summary"] == "5 users at once within TTFT ≤ 230 ms, for 90% of requests"
    # One slot of 80 ms: 1 user at a time within 230 ms would be (k-1) x 80 + 50 <= 230,
    # so 3 users; the search says so.
    assert ollama["capacity"]["value"] == 3
    assert "capacity vllm:crowded: 5 users at once within TTFT ≤ 230 ms" in out
    assert document["settings"]["capacity"]["mode"] == "concurrency"


def test_open_loop_rates(tmp_path, capsys, crowded):
    out_json = tmp_path / "rates.json"
    code, out, err = run_cli(
        capsys,
        "run", "--engine", "openai", "--base-url", crowded.base_url, "--model", "crowded",
        "--prompt", "Say hi.", "--max-tokens", 4, "--requests", 8, "--warmup", 0,
        "--rate", "20,inf", "--arrival", "constant", "--load-seed", 42, "--slo-ttft-ms", 200,
        "--db", tmp_path / "s.db", "--output-json", out_json, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out_json.read_text())
    assert document["settings"]["load"]["seed"] == 42
    steady, burst = document["lanes"][0]["levels"]
    assert (steady["load_label"], steady["rate"], steady["load_mode"]) == ("20 req/s", 20.0, "rate")
    assert (burst["load_label"], burst["rate"]) == ("all at once", None)
    # Constant arrivals 50 ms apart: 7 gaps in 0.35 s, whatever the server does.
    assert steady["achieved_rate"] == pytest.approx(20.0, rel=0.1)
    # All 8 at once: each sees the others in flight, TTFT 20 + 50 x 7 for the last.
    assert burst["peak_concurrency"] == 8
    assert burst["slo"]["attainment"] < steady["slo"]["attainment"] == 1.0
    checks = {c["check"]: c for c in steady["validation"]}
    assert checks["schedule"]["status"] in ("pass", "warn")
    assert "behind schedule p99" in checks["schedule"]["detail"]
    assert steady["schedule_lag_ms"]["p99"] is not None
    assert "20 req/s" in out and "all at once" in out and "slo_met_pct" in out


def test_a_cap_on_requests_in_flight_shows_as_schedule_lag(tmp_path, capsys, crowded):
    out_json = tmp_path / "capped.json"
    code, _, err = run_cli(
        capsys,
        "run", "--engine", "openai", "--base-url", crowded.base_url, "--model", "crowded",
        "--prompt", "Say hi.", "--max-tokens", 4, "--requests", 6, "--warmup", 0,
        "--rate", "inf", "--max-concurrency", 1,
        "--db", tmp_path / "s.db", "--output-json", out_json, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    level = json.loads(out_json.read_text())["lanes"][0]["levels"][0]
    assert level["peak_concurrency"] == 1 and level["max_concurrency"] == 1
    assert level["load_label"] == "all at once (≤1 in flight)"
    schedule = next(c for c in level["validation"] if c["check"] == "schedule")
    assert (
        schedule["status"] == "warn" and "waited for the cap of 1 in flight" in schedule["detail"]
    )


def test_targets_no_load_meets_and_a_search_that_hits_its_ceiling(tmp_path, capsys, crowded):
    base = [
        "capacity", "--engine", "openai", "--base-url", crowded.base_url, "--model", "crowded",
        "--prompt", "Say hi.", "--max-tokens", 4, "--requests", 4, "--warmup", 0,
        "--db", tmp_path / "s.db", "--quiet",
    ]  # fmt: skip
    code, out, _ = run_cli(capsys, *base, "--slo-ttft-ms", 1, "--output-json", tmp_path / "a.json")
    assert code == 0
    lane = json.loads((tmp_path / "a.json").read_text())["lanes"][0]
    assert lane["capacity"]["value"] is None and [lv["concurrency"] for lv in lane["levels"]] == [1]
    assert "no load measured met TTFT ≤ 1 ms, for 90% of requests" in out
    assert "note: even the lowest load missed the targets" in out
    code, out, _ = run_cli(
        capsys, *base, "--slo-ttft-ms", 60_000, "--max", 4, "--output-json", tmp_path / "b.json"
    )
    lane = json.loads((tmp_path / "b.json").read_text())["lanes"][0]
    assert lane["capacity"]["value"] == 4 and lane["capacity"]["reason"] == "ceiling"
    assert "at least 4 users at once" in out
    assert "note: the search stopped at its ceiling of 4: raise --max (At most)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--rate", "0"], "request rate 0 must be above 0 req/s (or inf)"),
        (["run", "--rate", "fast"], "not a request rate: 'fast'"),
        (["run", "--rate", "2", "--concurrency", "4"], "not allowed with argument"),
        (["run", "--rate", "2", "--burstiness", "0"], "burstiness must be above 0"),
        (["run", "--rate", "2", "--max-concurrency", "0"], "max concurrency must be 1..1024"),
        (["run", "--concurrency", "2", "--slo-ttft-ms", "-5"], "TTFT target must be above 0 ms"),
        (["capacity"], "a capacity search needs a latency target"),
        (
            ["capacity", "--slo-ttft-ms", "500", "--start", "8", "--max", "4"],
            "need 0 < start <= max",
        ),
        (["capacity", "--slo-ttft-ms", "500", "--target", "120%"], "must be above 0 and at most 1"),
        (["run", "--input-tokens", "64", "--prompt", "hi"], "give --input-tokens or a prompt"),
    ],
)
def test_bad_load_input_is_one_line(tmp_path, capsys, args, message):
    lane = ["--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    prompt = [] if "--prompt" in args else ["--prompt", "hi"]
    code, out, err = run_cli(capsys, *args, *lane, *prompt, "--db", tmp_path / "s.db")
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_synthetic_prompts_are_exact_and_never_repeat(tmp_path, capsys, scripted):
    """Every request of a synthetic run (warm-up and every level) gets its own prompt of
    exactly --input-tokens by the engine's tokenizer: no prefix cache hit by accident."""
    server = scripted.openai(flavor="vllm", tokenize_rule="words", ttft_ms=5, gap_ms=1)
    out_json = tmp_path / "synthetic.json"
    code, _, err = run_cli(
        capsys,
        "run", "--engine", "openai", "--base-url", server.base_url, "--model", "scripted-model",
        "--input-tokens", 40, "--output-tokens", 6, "--concurrency", "1,2", "--requests", 3,
        "--db", tmp_path / "s.db", "--output-json", out_json, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    chats = [r.body for r in server.requests if r.path.endswith("/chat/completions")]
    contents = [c["messages"][-1]["content"] for c in chats]
    assert len(contents) == 1 + 2 * 3  # the warm-up and two levels of three
    assert len(set(contents)) == len(contents)
    assert {len(text.split()) for text in contents} == {40}  # one token a word here
    assert {(c["max_tokens"], c["ignore_eos"], c["min_tokens"]) for c in chats} == {(6, True, 6)}
    document = json.loads(out_json.read_text())
    synthetic = document["settings"]["synthetic"]
    assert synthetic["input_tokens"] == 40 and isinstance(synthetic["seed"], int)
    request = document["lanes"][0]["levels"][0]["requests"][0]
    assert request["prompt"] == "(synthetic prompt of 40 tokens)"
