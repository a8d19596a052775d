"""The sandbox's real model on the real engines: Korean in, Korean out, checked answers,
continuous batching on vLLM, every llama.cpp variant answering."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.engines, pytest.mark.timeout(1800)]

SAMPLING = ("--temperature", "0", "--seed", "0")


def _lane(engine: dict, model: str | None = None) -> list[str]:
    return ["--lane", "openai", engine["base_url"], model or engine["models"][0]]


def _requests(lane: dict) -> list[dict]:
    return [r for level in lane["levels"] for r in level["requests"]]


def test_status_names_the_real_model_and_where_each_variant_comes_from(real_engines):
    model = real_engines["model"]
    assert model["title"] == "Qwen2.5-Coder-0.5B-Instruct"
    assert model["source"] == "pypi" and model["fallback"] is None
    llama = real_engines["llama"]["models"]
    assert llama == [
        "qwen2.5-coder-0.5b-q4_k_m",
        "qwen2.5-coder-0.5b-q4_k_m-to-q8_0",
        "qwen2.5-coder-0.5b-q4_k_m-to-q4_0",
    ]
    assert "requantized from the Q4_K_M" in model["details"][llama[1]]
    vllm = real_engines["vllm"]["models"][0]
    assert vllm.startswith("qwen2.5-coder-0.5b-q4_k_m-to-")
    assert model["vllm_dtype"] in model["details"][vllm]


def test_korean_preset_is_answered_in_korean_and_checked_on_both_engines(real_engines, cli):
    rc, data, log = cli(
        *_lane(real_engines["vllm"]),
        *_lane(real_engines["llama"]),
        *("--preset", "ko-news-json", "--concurrency", "1", "--requests", "2"),
        *("--warmup", "0", "--max-tokens", "96", *SAMPLING),
    )
    assert rc == 0, log
    for lane in data["lanes"]:
        requests = _requests(lane)
        assert len(requests) == 2
        for request in requests:
            assert request["error"] is None, lane["model"]
            quality = request["quality"]
            # The quality checks ran on the real answer: Korean expected, and the answer
            # is mostly Hangul (a drift to Chinese inside it is flagged, not hidden).
            assert quality["lang"]["expected"] == "ko"
            assert quality["lang"]["shares"]["hangul"] > 0.5, request["output_text"]
            codes = {flag["code"] for flag in quality["flags"]}
            assert quality["lang_drift"] == ("lang_drift" in codes)
            assert quality["json_valid"] is not None  # the preset asks for JSON


def test_vllm_batches_the_real_model(real_engines, cli):
    """Output throughput at 8 concurrent streams is at least 3x that of one (one run)."""
    rc, data, log = cli(
        *_lane(real_engines["vllm"]),
        *("--prompt", "Write a long story about a river.", "--concurrency", "1,8"),
        *("--requests", "8", "--warmup", "1", "--max-tokens", "64", "--ignore-eos", *SAMPLING),
    )
    assert rc == 0, log
    levels = {level["concurrency"]: level for level in data["lanes"][0]["levels"]}
    assert levels[1]["completed"] == levels[8]["completed"] == 8
    assert levels[1]["total_output_tokens"] == levels[8]["total_output_tokens"] == 8 * 64
    ratio = levels[8]["output_throughput"] / levels[1]["output_throughput"]
    assert ratio >= 3.0, (levels[1]["output_throughput"], levels[8]["output_throughput"])


def test_every_real_llama_cpp_variant_answers(real_engines, cli):
    llama = real_engines["llama"]
    lanes = []
    for model in llama["models"]:
        lanes += _lane(llama, model)
    rc, data, log = cli(
        *lanes,
        *("--prompt", "서울의 날씨를 한국어로 한 문장으로 알려 주세요.", "--concurrency", "1"),
        *("--requests", "1", "--warmup", "0", "--max-tokens", "32", *SAMPLING),
    )
    assert rc == 0, log
    assert [lane["model"] for lane in data["lanes"]] == llama["models"]
    for lane in data["lanes"]:
        (request,) = _requests(lane)
        assert request["error"] is None, lane["model"]
        assert request["output_text"].strip(), lane["model"]
        assert 0 < request["output_tokens"] <= 32
        assert 0 < request["ttft_ms"] < request["e2el_ms"]
