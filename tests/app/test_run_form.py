"""The Run page's form logic without Streamlit: lanes from pickers, typed prompts."""

from __future__ import annotations

from lib.app.lane_choices import LaneChoice, build_lanes, model_caption, prompts_from_text
from lib.core.records import ModelInfo
from lib.endpoints import Endpoint, EndpointStatus


def status(name, url, engine="vllm", api="openai", models=("m",), reachable=True, key_env=None):
    return EndpointStatus(
        endpoint=Endpoint(name=name, url=url, api=api, api_key_env=key_env),
        reachable=reachable,
        engine=engine if reachable else None,
        api=api if reachable else None,
        version="1",
        models=[ModelInfo(name=m) for m in models],
        error=None if reachable else "cannot connect",
        base_url=url,
    )


def test_lanes_from_choices_with_names_and_key_variables():
    statuses = [
        status("ollama", "http://127.0.0.1:11434", "ollama", "ollama", ("qwen:q4",)),
        status("gpu", "http://10.0.0.2:8000/v1", models=("Qwen-AWQ",), key_env="GPU_KEY"),
    ]
    lanes, errors = build_lanes(
        [LaneChoice("ollama", "qwen:q4"), LaneChoice("gpu", "Qwen-AWQ")], statuses
    )
    assert errors == []
    assert [(lane.engine, lane.model, lane.name) for lane in lanes] == [
        ("ollama", "qwen:q4", "Ollama · qwen:q4"),
        ("openai", "Qwen-AWQ", "vLLM · Qwen-AWQ"),
    ]
    assert lanes[1].api_key_env == "GPU_KEY" and lanes[1].base_url == "http://10.0.0.2:8000/v1"


def test_every_problem_is_one_line_per_lane():
    statuses = [
        status("down", "http://127.0.0.1:9", reachable=False),
        status("empty", "http://127.0.0.1:8001/v1", models=()),
        status("ok", "http://127.0.0.1:8000/v1"),
    ]
    choices = [
        LaneChoice("down", None),
        LaneChoice("empty", None),
        LaneChoice("ok", None),
        LaneChoice("ok", "m"),
        LaneChoice("ok", "m"),
        LaneChoice(None, None),
    ]
    lanes, errors = build_lanes(choices, statuses)
    assert [lane.model for lane in lanes] == ["m"]
    assert errors == [
        "Lane 1: down is unreachable (cannot connect). Start it or pick another.",
        "Lane 2: empty serves no models. Pull or load one first (Engines page).",
        "Lane 3: pick a model on ok.",
        "Lane 5 repeats lane 4: same endpoint and model.",
        "Lane 6: pick an endpoint.",
    ]
    assert build_lanes([], statuses) == (
        [],
        ["Add at least one lane: an endpoint and a model on it."],
    )


def test_same_kind_and_model_on_two_hosts_get_their_endpoint_in_the_name():
    # An invalid lane first: the names must still go to the right lanes.
    statuses = [
        status("down", "http://127.0.0.1:9", reachable=False),
        status("box a", "http://10.0.0.2:8000/v1"),
        status("box b", "http://10.0.0.3:8000/v1"),
    ]
    choices = [LaneChoice("down", "m"), LaneChoice("box a", "m"), LaneChoice("box b", "m")]
    lanes, errors = build_lanes(choices, statuses)
    assert len(errors) == 1
    assert [lane.name for lane in lanes] == ["vLLM · m @ box a", "vLLM · m @ box b"]


def test_typed_prompts_split_on_three_dashes():
    text = "첫 번째 질문\n---\nsecond prompt\nover two lines\n  ---  \n\n---\n"
    prompts = prompts_from_text(text)
    assert [p.text for p in prompts] == ["첫 번째 질문", "second prompt\nover two lines"]
    assert prompts_from_text("   ") == []


def test_model_caption_names_what_is_known():
    info = ModelInfo(
        name="qwen2.5:7b-instruct-q4_K_M",
        quantization="Q4_K_M",
        parameter_size="7.6B",
        size_bytes=4_683_073_952,
        context_length=32768,
    )
    assert model_caption(info) == "Q4_K_M · 7.6B params · 4.68 GB · context 32,768"
    assert model_caption(ModelInfo(name="plain")) == "quantization unknown"
