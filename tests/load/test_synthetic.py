"""Synthetic prompts of exact token lengths (lib/load/synthetic.py), counted by the
scripted servers' tokenizers and by fakes with awkward rules."""

from __future__ import annotations

import pytest

from lib.core.records import LaneSpec, Prompt, RunConfig, Sampling
from lib.engines.base import EngineError
from lib.engines.ollama import OllamaEngine
from lib.engines.openai_compat import OpenAICompatEngine
from lib.load.synthetic import (
    ESTIMATED,
    MAX_COUNT_CALLS,
    SyntheticSpec,
    build_prompts,
    new_seed,
    sampling_for,
    words,
)
from tests.scripted import OpenAIServer
from tests.scripted.core import count_tokens
from tests.scripted.ollama_server import OllamaServer, raw_tokens

MODEL = "scripted-model"


class FakeEngine:
    """count_tokens only, by a rule of the test's; counts every call."""

    def __init__(self, rule, fail_after: int | None = None) -> None:
        self.rule, self.calls, self.fail_after = rule, 0, fail_after

    async def count_tokens(self, model: str, text: str) -> int | None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise EngineError("tokenizer went away")
        return self.rule(text)


def word_count(text: str) -> int:
    return len(text.split())


@pytest.fixture
def vllm_words(scripted) -> OpenAIServer:
    return scripted.openai(flavor="vllm", tokenize_rule="words")


async def build_on(server: OpenAIServer, spec: SyntheticSpec, count: int, seed: int = 1):
    eng = OpenAICompatEngine(server.base_url)
    try:
        return await build_prompts(eng, MODEL, spec, count, seed)
    finally:
        await eng.aclose()


async def test_exact_lengths_by_the_servers_count(vllm_words: OpenAIServer):
    prompts = await build_on(vllm_words, SyntheticSpec(256, 64), 12)
    assert [p.input_tokens for p in prompts] == [256] * 12
    assert [word_count(p.text) for p in prompts] == [256] * 12
    assert [p.name for p in prompts] == [f"synthetic-256-#{i}" for i in range(1, 13)]
    assert all(p.messages[0]["role"] == "user" and len(p.messages) == 1 for p in prompts)
    # Distinct prompts, and distinct from their first word on (no accidental cache hit).
    assert len({p.text for p in prompts}) == 12
    assert len({p.text.split()[0] for p in prompts}) == 12
    assert set(" ".join(p.text for p in prompts).lower().replace(":", "").split()) <= set(words())
    counts = [r for r in vllm_words.recorded("/tokenize")]
    assert len(counts) <= MAX_COUNT_CALLS * 12


async def test_awkward_tokenizer_lands_within_one_and_records_it(scripted):
    """The scripted default rule counts most characters as tokens: a word is 4-10
    tokens, so whole words can rarely be exact; the fine steps get within one."""
    server = scripted.openai(flavor="llamacpp")
    prompts = await build_on(server, SyntheticSpec(200, 16), 6)
    for p in prompts:
        assert p.input_tokens == count_tokens(p.text)  # the true count, recorded
        assert abs(p.input_tokens - 200) <= 1
    assert len(server.recorded("/tokenize")) <= MAX_COUNT_CALLS * 6


async def test_same_seed_same_prompts(vllm_words: OpenAIServer):
    spec = SyntheticSpec(100, 8)
    first = await build_on(vllm_words, spec, 5, seed=42)
    again = await build_on(vllm_words, spec, 5, seed=42)
    other = await build_on(vllm_words, spec, 5, seed=43)
    assert [p.text for p in first] == [p.text for p in again]
    assert not {p.text for p in first} & {p.text for p in other}


async def test_seed_from_the_spec_or_none_at_all():
    eng = FakeEngine(word_count)
    spec = SyntheticSpec(50, 8, seed=7)
    a = await build_prompts(eng, MODEL, spec, 2)
    b = await build_prompts(eng, MODEL, SyntheticSpec(50, 8), 2, seed=7)
    assert [p.text for p in a] == [p.text for p in b]
    with pytest.raises(ValueError, match="seed"):
        await build_prompts(eng, MODEL, SyntheticSpec(50, 8), 2)
    with pytest.raises(ValueError, match="count"):
        await build_prompts(eng, MODEL, spec, 0)
    assert isinstance(new_seed(), int) and new_seed() != new_seed()


async def test_shared_prefix_is_the_same_text_of_that_many_tokens(vllm_words: OpenAIServer):
    prompts = await build_on(vllm_words, SyntheticSpec(300, 8, shared_prefix_tokens=120), 4)
    assert [p.input_tokens for p in prompts] == [300] * 4
    prefixes = {p.text.split("\n\n")[0] for p in prompts}
    assert len(prefixes) == 1
    assert word_count(prefixes.pop()) == 120
    # Past the prefix every prompt is its own from the first word.
    assert len({p.text.split("\n\n")[1].split()[0] for p in prompts}) == 4


async def test_no_tokenizer_falls_back_to_estimates(scripted):
    server = scripted.openai(flavor="vllm", tokenizer=False)
    prompts = await build_on(server, SyntheticSpec(400, 8, shared_prefix_tokens=100), 3)
    assert all(p.input_tokens is None for p in prompts)
    assert [p.name for p in prompts] == [f"synthetic-400-#{i}{ESTIMATED}" for i in (1, 2, 3)]
    # ~0.75 words a token.
    assert all(abs(word_count(p.text) - 300) <= 2 for p in prompts)
    # Asked once per route, not once per prompt.
    assert len([r for r in server.requests if r.method == "POST"]) <= 3


async def test_ollama_counts_through_raw_generate(scripted):
    server: OllamaServer = scripted.ollama()
    eng = OllamaEngine(server.url)
    try:
        spec = SyntheticSpec(128, 8, shared_prefix_tokens=32)
        prompts = await build_prompts(eng, "llama3.2", spec, 4, seed=3)
    finally:
        await eng.aclose()
    assert [p.input_tokens for p in prompts] == [128] * 4
    assert [raw_tokens(p.text) for p in prompts] == [128] * 4


async def test_call_cap_holds_for_any_tokenizer():
    # Tokens by characters in steps of three: whole words and single characters both
    # jump past the target now and then.
    eng = FakeEngine(lambda text: len(text) // 3 + text.count("e"))
    prompts = await build_prompts(eng, MODEL, SyntheticSpec(500, 8, 60), 10, seed=5)
    assert eng.calls <= MAX_COUNT_CALLS * 11  # ten prompts and the prefix
    for p in prompts:
        assert p.input_tokens == len(p.text) // 3 + p.text.count("e")
        assert abs(p.input_tokens - 500) <= 1


async def test_engine_errors_come_out_as_themselves():
    eng = FakeEngine(word_count, fail_after=5)
    with pytest.raises(EngineError, match="tokenizer went away"):
        await build_prompts(eng, MODEL, SyntheticSpec(64, 8), 20, seed=1)


def test_sampling_for_fixes_the_answer_length():
    base = Sampling(max_tokens=999, temperature=0.7, top_p=0.9, seed=11)
    got = sampling_for(SyntheticSpec(64, 32), base)
    assert got == Sampling(max_tokens=32, temperature=0.7, top_p=0.9, seed=11, ignore_eos=True)
    assert base.max_tokens == 999 and base.ignore_eos is False


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"input_tokens": 4, "output_tokens": 8}, "input_tokens must be 8"),
        ({"input_tokens": 64, "output_tokens": 0}, "output_tokens"),
        ({"input_tokens": 64, "output_tokens": 8, "shared_prefix_tokens": 60}, "past the"),
        ({"input_tokens": 64, "output_tokens": 8, "shared_prefix_tokens": -1}, "negative"),
        ({"input_tokens": 64.0, "output_tokens": 8}, "whole number"),
    ],
)
def test_spec_bounds(kw, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSpec(**kw)


def test_prompt_input_tokens_round_trip():
    prompts = [Prompt.from_text("x y", name="synthetic-2-#1", input_tokens=2)]
    prompts.append(Prompt.from_text("plain"))
    config = RunConfig(lanes=[LaneSpec("openai", "http://h/v1", "m")], prompts=prompts)
    back = RunConfig.from_dict(config.to_dict())
    assert [p.input_tokens for p in back.prompts] == [2, None]
    # Stored configs from before the field still load.
    old = config.to_dict()
    for p in old["prompts"]:
        del p["input_tokens"]
    assert [p.input_tokens for p in RunConfig.from_dict(old).prompts] == [None, None]
