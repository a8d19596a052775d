"""Engine recipes as data: validation, the cells of a matrix, their names."""

from __future__ import annotations

import pytest

from lib.core.recipes import (
    LLAMA_CPP,
    OLLAMA,
    VLLM,
    EngineRecipe,
    RecipeError,
    cross,
    name_cells,
    parse_setting,
    recipes_from_json,
)
from lib.core.records import LaneSpec, RunConfig


def test_a_recipe_round_trips_through_json_and_a_run_config() -> None:
    recipe = EngineRecipe(engine=VLLM, model="Qwen/Qwen2.5-0.5B-Instruct-AWQ", quantization="awq")
    lane = LaneSpec.launched(recipe)
    assert (lane.engine, lane.model, lane.base_url) == ("openai", "Qwen2.5-0.5B-Instruct-AWQ", "")
    config = RunConfig(lanes=[lane], prompts=[])
    again = RunConfig.from_dict(config.to_dict())
    assert again.lanes[0].recipe == recipe


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"engine": "vllm"}, "needs 'model'"),
        ({"engine": "tgi", "model": "m"}, "engine must be one of"),
        ({"engine": "vllm", "model": "m", "parallel": 4}, "parallel is a llama.cpp setting"),
        ({"engine": "vllm", "model": "m", "max_num_seqs": 0}, "at least 1"),
        ({"engine": "vllm", "model": "m", "gpu_memory_utilization": 1.5}, "at most 1"),
        ({"engine": "ollama", "model": "m", "kv_cache_type": "q2"}, "kv_cache_type"),
        ({"engine": "vllm", "model": "--help"}, "does not start with '-'"),
        ({"engine": "vllm", "model": "m", "env": {"lower": "x"}}, "UPPER_CASE"),
        ({"engine": "vllm", "model": "m", "extra_args": "--x"}, "list of strings"),
        ({"engine": "vllm", "model": "m", "port": 80}, "1024 to 65535"),
        ({"engine": "vllm", "model": "m", "shell": "rm"}, "unknown recipe field 'shell'"),
    ],
)
def test_bad_recipes_are_one_line_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError, match=message) as err:
        EngineRecipe.from_dict(data)
    assert "\n" not in str(err.value)


def test_cells_cross_only_the_settings_of_their_engine() -> None:
    vllm = EngineRecipe(engine=VLLM, model="/m/hf", variant="bf16", dtype="bfloat16")
    llama = EngineRecipe(engine=LLAMA_CPP, model="/m/q4.gguf", variant="Q4_K_M")
    grid = dict([parse_setting("max_num_seqs=1,4"), parse_setting("threads=1,2")])
    cells = name_cells(cross([vllm, llama], grid))
    assert [c.name for c in cells] == [
        "vllm · bf16 · seqs 1",
        "vllm · bf16 · seqs 4",
        "llama.cpp · Q4_K_M · threads 1",
        "llama.cpp · Q4_K_M · threads 2",
    ]
    assert [c.max_num_seqs for c in cells[:2]] == [1, 4]
    assert all(c.max_num_seqs is None for c in cells[2:])


def test_settings_parse_to_numbers_and_booleans() -> None:
    assert parse_setting("flash_attention=true,false") == ("flash_attention", [True, False])
    assert parse_setting("gpu_memory_utilization=0.5,0.9")[1] == [0.5, 0.9]
    with pytest.raises(RecipeError, match="NAME=V1,V2"):
        parse_setting("seqs=1")


def test_a_recipes_file_needs_unique_names() -> None:
    item = {"engine": OLLAMA, "model": "qwen2.5:7b"}
    with pytest.raises(RecipeError, match="both named"):
        recipes_from_json({"recipes": [item, item]})
    assert len(recipes_from_json([item, {**item, "name": "four", "num_parallel": 4}])) == 2
