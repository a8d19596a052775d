"""lib/endpoints/variant_recipes.py: what running endpoints serve, as recipes a matrix starts.

The models come from real probes of the scripted servers (tests/scripted/: Ollama's
/api/tags and vLLM's /v1/models as the real ones write them), so the recipes are built
from the ModelInfo values the Run page has; a few hand-made ones cover a local folder, an
endpoint on another machine and an unquantized model.
"""

from __future__ import annotations

import pytest

from lib import endpoints as ep
from lib.core.recipes import OLLAMA, VLLM, EngineRecipe
from lib.core.records import ModelInfo
from lib.endpoints import Endpoint
from lib.endpoints.variant_recipes import (
    is_loopback,
    ollama_recipes,
    served_source,
    tag_and_quantization,
    vllm_recipes,
)
from tests.conftest import OLLAMA_MODEL, VLLM_MODEL
from tests.scripted.ollama_server import model_entry

QWEN = "Qwen/Qwen2.5-7B-Instruct"


def probed(url: str, api: str) -> ep.EndpointStatus:
    status = ep.probe(Endpoint(name="e", url=url, api=api), timeout=5.0)
    assert status.reachable, status.error
    return status


def plain(recipes: list[EngineRecipe]) -> list[tuple]:
    return [(r.engine, r.model, r.variant, r.executable) for r in recipes]


# --- Ollama ---------------------------------------------------------------------------


def test_ollama_recipes_from_a_probed_ollama(ollama_server):
    status = probed(ollama_server.url, "ollama")
    assert [m.name for m in status.models] == [OLLAMA_MODEL, "llama3.2:latest"]
    recipes = ollama_recipes(status.models)
    assert plain(recipes) == [
        (OLLAMA, OLLAMA_MODEL, "Q4_K_M", ""),
        (OLLAMA, "llama3.2:latest", "Q8_0", ""),
    ]
    for recipe in recipes:
        assert recipe.validate() == []
        assert recipe.settings() == {}  # Ollama's own defaults until a setting is crossed
        assert (recipe.served(), recipe.lane_engine()) == (recipe.model, "ollama")
    assert recipes[0].label() == "ollama · Q4_K_M"


def test_ollama_recipes_from_rows_and_tags_entries(ollama_server):
    status = probed(ollama_server.url, "ollama")
    expected = plain(ollama_recipes(status.models))
    # The same tags as the Engines page's rows, and as /api/tags entries.
    assert plain(ollama_recipes(ep.model_rows(status.models))) == expected
    entries = [model_entry(OLLAMA_MODEL), model_entry("llama3.2:latest", quant="Q8_0")]
    assert plain(ollama_recipes(entries)) == expected


def test_ollama_tags_without_a_level_bad_names_and_repeats():
    tags = [
        ModelInfo("phi3:3.8b-mini-q8_0"),  # no level listed: the tag's own suffix
        ModelInfo("mystery:latest"),  # nothing says: no variant
        {"name": "gemma2:2b", "details": {"quantization_level": "Q4_0"}},
        {"model": "-rm -rf", "quantization": "Q4_0"},  # not an Ollama name
        ModelInfo(""),
        ModelInfo("phi3:3.8b-mini-q8_0", quantization="Q8_0"),  # listed twice
    ]
    assert plain(ollama_recipes(tags)) == [
        (OLLAMA, "phi3:3.8b-mini-q8_0", "Q8_0", ""),
        (OLLAMA, "mystery:latest", "", ""),
        (OLLAMA, "gemma2:2b", "Q4_0", ""),
    ]
    assert tag_and_quantization({"model": " qwen3:8b ", "quantization": " Q4_K_M "}) == (
        "qwen3:8b",
        "Q4_K_M",
    )
    assert ollama_recipes([]) == []


# --- vLLM -----------------------------------------------------------------------------


def test_vllm_recipes_from_a_probed_vllm_serving_a_hub_repo(scripted):
    server = scripted.openai(models=[VLLM_MODEL], root=VLLM_MODEL, max_model_len=8192)
    status = probed(server.base_url, "openai")
    assert status.engine == "vllm"
    served = ep.served_model(status)
    assert served is not None and served.context_length == 8192
    recipes = vllm_recipes(served, status.base_url)
    base = "Qwen/Qwen2.5-7B-Instruct"
    # The served model first (as clients ask for it now), then its siblings.
    assert [(r.model, r.served_model, r.variant) for r in recipes] == [
        (VLLM_MODEL, VLLM_MODEL, "AWQ"),
        (f"{base}-GPTQ-Int4", f"{base}-GPTQ-Int4", "GPTQ-Int4"),
        (f"{base}-GPTQ-Int8", f"{base}-GPTQ-Int8", "GPTQ-Int8"),
        (f"{base}-FP8", f"{base}-FP8", "FP8"),
        (base, base, "unquantized"),
    ]
    for recipe in recipes:
        assert recipe.engine == VLLM and recipe.executable == ""
        assert recipe.validate() == []
        # Comparable with the endpoint; vLLM picks the kernel from the checkpoint.
        assert recipe.settings() == {"max_model_len": 8192, "gpu_memory_utilization": 0.9}
        assert recipe.quantization is None
    assert recipes[1].label() == "vllm · GPTQ-Int4 · len 8192 · gpu mem 0.9"


def test_vllm_recipes_for_a_local_folder_here_and_on_another_machine(scripted):
    # The scripted vLLM's own root: a folder whose name says AWQ, on this machine.
    server = scripted.openai(models=["qwen-small"])
    status = probed(server.base_url, "openai")
    served = ep.served_model(status)
    assert served is not None and served.digest == "/models/Qwen2.5-0.5B-Instruct-AWQ"
    recipes = vllm_recipes(served, status.base_url)
    assert [(r.model, r.served_model, r.variant) for r in recipes] == [
        ("/models/Qwen2.5-0.5B-Instruct-AWQ", "qwen-small", "AWQ"),
        ("/models/Qwen2.5-0.5B-Instruct-GPTQ-Int4", "Qwen2.5-0.5B-Instruct-GPTQ-Int4", "GPTQ-Int4"),
        ("/models/Qwen2.5-0.5B-Instruct-GPTQ-Int8", "Qwen2.5-0.5B-Instruct-GPTQ-Int8", "GPTQ-Int8"),
        ("/models/Qwen2.5-0.5B-Instruct-FP8", "Qwen2.5-0.5B-Instruct-FP8", "FP8"),
        ("/models/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct", "unquantized"),
    ]
    assert all(r.max_model_len == 4096 and r.validate() == [] for r in recipes)
    # The same folders at another machine's vLLM are that machine's files: nothing here.
    assert vllm_recipes(served, "http://gpu.example.com:8000/v1") == []

    # A folder whose name says nothing (the sandbox's): only the served model, here.
    hf = ModelInfo("tiny-qwen2", digest="/srv/models/tiny-qwen2/hf", context_length=1024)
    [only] = vllm_recipes(hf, "http://localhost:8000/v1")
    assert (only.model, only.served_model, only.variant) == (
        "/srv/models/tiny-qwen2/hf",
        "tiny-qwen2",
        "",
    )
    assert vllm_recipes(hf, "http://10.1.2.3:8000/v1") == []
    # A served name that is not a plain name: the folder's own name instead.
    odd = ModelInfo("tiny qwen\n--port 1", digest="/srv/models/tiny-qwen2/hf")
    assert vllm_recipes(odd, "http://127.0.0.1:8000/v1")[0].served_model == "hf"


def test_vllm_recipes_unquantized_remote_repo_and_what_is_known():
    served = ModelInfo(
        "qwen", digest=QWEN, context_length=None, quantization="unquantized (bfloat16)"
    )
    recipes = vllm_recipes(served, "https://gpu.example.com:9000/v1", gpu_memory_utilization=0.8)
    # A Hub id is downloadable anywhere: the remote endpoint's model and its siblings, each
    # served under its repo id (a name another machine reports reaches no command line).
    assert [(r.model, r.served_model, r.variant) for r in recipes] == [
        (QWEN, QWEN, "unquantized (bfloat16)"),
        (f"{QWEN}-AWQ", f"{QWEN}-AWQ", "AWQ"),
        (f"{QWEN}-GPTQ-Int4", f"{QWEN}-GPTQ-Int4", "GPTQ-Int4"),
        (f"{QWEN}-GPTQ-Int8", f"{QWEN}-GPTQ-Int8", "GPTQ-Int8"),
        (f"{QWEN}-FP8", f"{QWEN}-FP8", "FP8"),
    ]
    assert all(r.settings() == {"gpu_memory_utilization": 0.8} for r in recipes)
    assert served_source(served, "https://gpu.example.com:9000/v1") == QWEN
    # Nothing names the model's source: no recipe at all.
    assert vllm_recipes(ModelInfo("m"), "http://gpu.example.com/v1") == []


@pytest.mark.parametrize(
    ("url", "here"),
    [
        ("http://127.0.0.1:11434", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://10.0.0.5:11434", False),
        ("https://gpu.example.com/v1", False),
        ("http://[bad", False),
    ],
)
def test_is_loopback(url, here):
    assert is_loopback(url) is here
