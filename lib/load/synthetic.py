"""Synthetic prompts of exact input lengths, counted by the serving engine's tokenizer.

A workload of "512 tokens in, 128 out" means 512 by the model that serves it: the same
text is 512 tokens for one tokenizer and 580 for another, so every lane builds its own
prompts through `Engine.count_tokens`. The text is seeded random words from a fixed
English list (presets/words.txt); each prompt opens with a distinct random header so
that no prefix cache hits by accident, and with `shared_prefix_tokens` every prompt
starts with the same prefix, so that one does on purpose.

Lengths are reached by counting and adjusting: a guess of the number of words from a
tokens-per-word rate, interpolation on the word count between counted texts, then a
fine step (short filler words, then characters of the next word). At most
MAX_COUNT_CALLS counts per prompt; when that does not give the exact length, the
nearest text is kept (±1 token in practice) and its count recorded in
`Prompt.input_tokens`. A server that cannot count (count_tokens gives None) gets
prompts of an estimated length: `input_tokens` None and "(estimated)" in the name.

Same seed, same tokenizer → same prompts: the search depends only on the counts, and
every prompt's first guess comes from the prefix and the first prompt, which are built
before the rest (those are built concurrently).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lib.core.records import MAX_OUTPUT_TOKENS, MAX_REQUESTS_PER_LEVEL, Prompt, Sampling
from lib.engines.base import Engine

WORDS_FILE = Path(__file__).with_name("presets") / "words.txt"
MAX_COUNT_CALLS = 8  # tokenize calls per prompt (and for the shared prefix)
WORDS_PER_TOKEN = 0.75  # English text in common tokenizers; the estimate and first guess
MIN_OWN_TOKENS = 8  # each prompt's own part (header and body) past the shared prefix
MAX_INPUT_TOKENS = 1_048_576
CONCURRENCY = 8  # prompts built at once: counts are cheap, a server has a few slots
HEADER_WORDS = 3
ESTIMATED = " (estimated)"  # name suffix of prompts whose length was not counted

Count = Callable[[str], Awaitable[int]]


@dataclass(frozen=True)
class SyntheticSpec:
    """Prompt and answer lengths in tokens. `shared_prefix_tokens` > 0: every prompt
    starts with the same text of that many tokens (to measure prefix caches)."""

    input_tokens: int
    output_tokens: int
    shared_prefix_tokens: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "shared_prefix_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be a whole number, not {value!r}")
        if not 1 <= self.output_tokens <= MAX_OUTPUT_TOKENS:
            raise ValueError(f"output_tokens must be 1 to {MAX_OUTPUT_TOKENS}")
        if self.shared_prefix_tokens < 0:
            raise ValueError("shared_prefix_tokens cannot be negative")
        least = self.shared_prefix_tokens + MIN_OWN_TOKENS
        if not least <= self.input_tokens <= MAX_INPUT_TOKENS:
            raise ValueError(
                f"input_tokens must be {least} to {MAX_INPUT_TOKENS} (each prompt needs"
                f" {MIN_OWN_TOKENS} tokens of its own past the shared prefix)"
            )


def new_seed() -> int:
    """A fresh seed for one run, to be recorded with it."""
    return secrets.randbits(32)


def sampling_for(spec: SyntheticSpec, base: Sampling) -> Sampling:
    """`base` with the answer length fixed at spec.output_tokens: max_tokens plus
    ignore_eos (vLLM and llama.cpp honour it; Ollama has no equivalent)."""
    return dataclasses.replace(base, max_tokens=spec.output_tokens, ignore_eos=True)


@functools.cache
def words() -> tuple[str, ...]:
    """The word list, in file order (the order is part of what a seed means)."""
    lines = WORDS_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(w for w in (line.strip() for line in lines) if w and not w.startswith("#"))


@functools.cache
def _short_words() -> tuple[str, ...]:
    # One token with its leading space in every tokenizer seen: the fine step's filler.
    return tuple(w for w in words() if len(w) <= 3)


class _NoCount(Exception):
    """The engine cannot count tokens: fall back to estimates."""


@dataclass
class _Rate:
    """Tokens ≈ base + per_word × words: the first guess of a fit."""

    base: float
    per_word: float

    def words_for(self, target: int) -> int:
        return max(round((target - self.base) / self.per_word), 0)


@dataclass
class _Fit:
    text: str
    tokens: int
    words: int  # body words in the text (for the next prompts' rate)


class _Fitter:
    """Finds the text head + body[:k] (+ a fine step) + tail nearest to `target` tokens
    with at most MAX_COUNT_CALLS counts; `best` is the nearest counted so far."""

    def __init__(self, count: Count, head: str, body: list[str], tail: str, target: int) -> None:
        self.count, self.head, self.body, self.tail = count, head, body, tail
        self.target = target
        self.calls = MAX_COUNT_CALLS
        self.best: _Fit | None = None
        self.points: dict[int, int] = {}  # body words → tokens

    def text(self, k: int, extra: str = "") -> str:
        parts = ([self.head] if self.head else []) + self.body[:k]
        return " ".join(parts) + extra + self.tail

    async def measure(self, k: int, extra: str = "") -> int:
        candidate = self.text(k, extra)
        n = await self.count(candidate)
        self.calls -= 1
        if self.best is None or abs(n - self.target) < abs(self.best.tokens - self.target):
            self.best = _Fit(candidate, n, k)
        if not extra:
            self.points[k] = n
        return n

    async def run(self, rate: _Rate, filler: Sequence[str]) -> _Fit:
        await self._words(rate)
        assert self.best is not None
        if self.best.tokens != self.target and self.calls > 0:
            await self._fine(filler)
        return self.best

    async def _words(self, rate: _Rate) -> None:
        """Search on the word count: the guess, then steps and interpolation."""
        target, points, body = self.target, self.points, self.body
        k = min(rate.words_for(target), len(body))
        while self.calls > 0:
            if await self.measure(k) == target:
                return
            lo, hi = self._bracket()
            if lo is not None and hi is not None:
                if hi - lo <= 1:
                    return  # no word count is exact: the fine step's turn
                # Interpolate between the nearest counts on each side.
                step = (target - points[lo]) * (hi - lo) / (points[hi] - points[lo])
                k = min(max(lo + round(step), lo + 1), hi - 1)
                continue
            # One side only: step by the rate seen in this fit, else the guess's.
            per_word = rate.per_word
            if len(points) >= 2:
                k_min, k_max = min(points), max(points)
                per_word = max((points[k_max] - points[k_min]) / (k_max - k_min), 0.1)
            if lo is not None:
                if lo >= len(body):
                    return  # not with len(body) > target: every word is a token or more
                k = min(lo + max(math.ceil((target - points[lo]) / per_word), 1), len(body))
            else:
                assert hi is not None
                if hi == 0:
                    return  # the head alone is longer than the target
                k = max(hi - max(math.ceil((points[hi] - target) / per_word), 1), 0)

    def _bracket(self) -> tuple[int | None, int | None]:
        """The largest word count under the target and the smallest over it."""
        below = [k for k, n in self.points.items() if n < self.target]
        above = [k for k, n in self.points.items() if n > self.target]
        return max(below, default=None), min(above, default=None)

    async def _fine(self, filler: Sequence[str]) -> None:
        """k words are short of the target and k + 1 over (word k + 1 is several
        tokens): short filler words for the missing tokens, else a binary search on
        how many characters of word k + 1 to keep."""
        lo, hi = self._bracket()
        if lo is None or hi != lo + 1:
            return
        missing = self.target - self.points[lo]
        extra = "".join(" " + filler[i % len(filler)] for i in range(missing))
        if await self.measure(lo, extra) == self.target:
            return
        word = self.body[lo]
        short, long_ = 0, len(word)  # characters kept: too few tokens / too many
        while long_ - short > 1 and self.calls > 0:
            mid = (short + long_) // 2
            n = await self.measure(lo, " " + word[:mid])
            if n == self.target:
                return
            short, long_ = (mid, long_) if n < self.target else (short, mid)


class _Counter:
    """engine.count_tokens for one model; the first None (no tokenizer) switches every
    later count off, so the remaining prompts are estimated without asking again."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.engine, self.model = engine, model
        self.unsupported = False

    async def __call__(self, text: str) -> int:
        if self.unsupported:
            raise _NoCount
        n = await self.engine.count_tokens(self.model, text)
        if n is None:
            self.unsupported = True
            raise _NoCount
        return n


def _rng(seed: int, what: str) -> random.Random:
    # String seeds are hashed with SHA-512: the same stream on every platform and run.
    return random.Random(f"servescope-synthetic:{seed}:{what}")


def _body(seed: int, what: str, n_words: int) -> list[str]:
    rng, vocab = _rng(seed, what), words()
    return [vocab[rng.randrange(len(vocab))] for _ in range(n_words)]


def _headers(seed: int, count: int) -> list[str]:
    """Distinct opening words per prompt, e.g. "Copper wind basket:". The first words
    follow a shuffled word list, so prompts differ from their first token on."""
    rng, vocab = _rng(seed, "headers"), words()
    firsts = list(vocab)
    rng.shuffle(firsts)
    seen: set[str] = set()
    out: list[str] = []
    for i in range(count):
        while True:
            rest = [vocab[rng.randrange(len(vocab))] for _ in range(HEADER_WORDS - 1)]
            header = " ".join([firsts[i % len(firsts)].capitalize(), *rest]) + ":"
            if header not in seen:
                break
        seen.add(header)
        out.append(header)
    return out


def _estimated_words(tokens: int) -> int:
    return max(round(tokens * WORDS_PER_TOKEN), 1)


async def build_prompts(
    engine: Engine, model: str, spec: SyntheticSpec, count: int, seed: int | None = None
) -> list[Prompt]:
    """`count` distinct prompts of exactly spec.input_tokens tokens each, counted by
    `engine`'s tokenizer for `model` (count_tokens).

    The length is that of the user message's content only: the chat template adds a
    few tokens around it, which the server counts in its prompt_tokens. Each prompt is
    named "synthetic-<input_tokens>-#<n>" (n from 1) and carries its counted length in
    `input_tokens`; when exactness is out of reach within MAX_COUNT_CALLS counts it is
    the nearest (±1 in practice). When the engine cannot count, lengths are estimated
    (~0.75 words a token): `input_tokens` None, names end in " (estimated)".

    `seed` (else spec.seed) picks the words: the caller draws one per run (new_seed())
    and records it. Raises ValueError without a seed or for a bad count, and the
    engine's EngineError subclasses when it cannot be reached.
    """
    seed = spec.seed if seed is None else seed
    if seed is None:
        raise ValueError("synthetic prompts need a seed (new_seed() draws one)")
    if not 1 <= count <= MAX_REQUESTS_PER_LEVEL:
        raise ValueError(f"count must be 1 to {MAX_REQUESTS_PER_LEVEL}")
    counter = _Counter(engine, model)
    target, shared = spec.input_tokens, spec.shared_prefix_tokens
    headers = _headers(seed, count)
    filler = _short_words()
    rate = _Rate(0.0, 1 / WORDS_PER_TOKEN)
    prefix = ""
    if shared:
        prefix_words = _body(seed, "prefix", shared + 16)
        try:
            fitter = _Fitter(counter, "", prefix_words, "\n\n", shared)
            fit = await fitter.run(rate, filler)
            prefix = fit.text
            if fit.words:
                rate = _Rate(0.0, max(fit.tokens / fit.words, 0.1))
        except _NoCount:
            prefix = " ".join(prefix_words[: _estimated_words(shared)]) + "\n\n"
    # The header's tokens, guessed at the rate so far, plus its colon.
    rate.base = shared + HEADER_WORDS * rate.per_word + 1

    async def one(i: int, rate: _Rate) -> tuple[Prompt, _Rate]:
        body = _body(seed, f"prompt-{i}", target + 16)
        head = prefix + headers[i]
        name = f"synthetic-{target}-#{i + 1}"
        try:
            fit = await _Fitter(counter, head, body, "", target).run(rate, filler)
        except _NoCount:
            n_words = max(_estimated_words(target - shared) - HEADER_WORDS, 1)
            text = " ".join([head, *body[:n_words]])
            return Prompt.from_text(text, name=name + ESTIMATED), rate
        learned = rate
        if fit.words:
            # The next prompts' first guess: this prompt's word count, near enough.
            learned = _Rate(rate.base, max((fit.tokens - rate.base) / fit.words, 0.1))
        return Prompt.from_text(fit.text, name=name, input_tokens=fit.tokens), learned

    # The first prompt alone: its word count is every other prompt's first guess, and
    # the same for any order the rest finish in (so a seed gives the same prompts).
    first, rate = await one(0, rate)
    prompts: list[Prompt | None] = [first] + [None] * (count - 1)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def rest(i: int) -> None:
        async with gate:
            prompts[i] = (await one(i, rate))[0]

    tasks = [asyncio.create_task(rest(i)) for i in range(1, count)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # Not a TaskGroup: its ExceptionGroup would hide the engine's one-line error.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [p for p in prompts if p is not None]
