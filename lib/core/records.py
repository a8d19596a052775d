"""Configs and records shared by the runner, the store, the CLI and the pages.

Plain dataclasses: the benchmark process and the dashboard exchange them through
SQLite as JSON, so every field is JSON-friendly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from lib.core.load_pattern import CapacitySearch, LoadPattern
from lib.core.recipes import EngineRecipe
from lib.core.slo import Slo

EngineKind = Literal["ollama", "openai"]
ENGINE_KINDS: tuple[str, ...] = ("ollama", "openai")

# Bounds on user input, stated in errors and docs (issue "Reliability": absurd values
# get a clear message instead of exhausting the machine).
MAX_CONCURRENCY = 1024
MAX_REQUESTS_PER_LEVEL = 100_000
MAX_OUTPUT_TOKENS = 131_072
MAX_WARMUP = 1_000
MAX_TIMEOUT_S = 3_600.0


@dataclass
class Sampling:
    """Sampling settings sent explicitly to every lane (engine defaults differ)."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    ignore_eos: bool = False


@dataclass
class Prompt:
    """One prompt of a workload: chat messages plus what its answer is checked for."""

    messages: list[dict[str, str]]
    expect_lang: str | None = None  # ko, ja, zh, en; None = detect from the prompt
    expect_json: list[str] | None = None  # required keys when the answer must be JSON
    name: str | None = None
    # Tokens in the user message by the serving engine's own tokenizer, when measured
    # (synthetic prompts, lib/load/synthetic.py); None when not measured or estimated.
    input_tokens: int | None = None

    @classmethod
    def from_text(cls, text: str, **kw: Any) -> Prompt:
        return cls(messages=[{"role": "user", "content": text}], **kw)

    @property
    def text(self) -> str:
        """The last user message, for display and language detection."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message.get("content", "")
        return self.messages[-1].get("content", "") if self.messages else ""


@dataclass
class LaneSpec:
    """An engine endpoint plus a model on it."""

    engine: EngineKind
    base_url: str
    model: str
    name: str = ""  # display name; filled by the runner when empty
    # Name of the environment variable holding this endpoint's API key. The key
    # itself is never put in a config, the store, an export or a log.
    api_key_env: str | None = None
    # When set, servescope starts this engine before the lane and stops it afterwards
    # (lib/launch); base_url is then filled in at launch.
    recipe: EngineRecipe | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaneSpec:
        data = dict(data)
        recipe = data.get("recipe")
        data["recipe"] = EngineRecipe.from_dict(recipe) if isinstance(recipe, dict) else None
        return cls(**data)

    @classmethod
    def launched(cls, recipe: EngineRecipe, name: str = "") -> LaneSpec:
        """A lane whose engine servescope starts from ``recipe``."""
        return cls(recipe.lane_engine(), "", recipe.served(), name or recipe.label(), None, recipe)

    def display_name(self) -> str:
        return self.name or f"{self.engine}:{self.model}"


@dataclass
class RunConfig:
    """Everything a run depends on, recorded with it."""

    lanes: list[LaneSpec]
    prompts: list[Prompt]
    concurrency: list[int] = field(default_factory=lambda: [1])
    requests: int = 10  # measured requests per level
    warmup: int = 1  # warm-up requests per lane before its first level, not measured
    sampling: Sampling = field(default_factory=Sampling)
    timeout_s: float = 120.0  # per request
    label: str = ""
    lanes_parallel: bool = False  # default: lanes one after another (shared GPU)
    num_ctx: int | None = None  # Ollama context length, held constant for the run
    # Open-loop rates instead of the concurrency levels (lib/core/load_pattern.py).
    load: LoadPattern = field(default_factory=LoadPattern)
    # Latency targets: each level's goodput and attainment, each lane's capacity.
    slo: Slo | None = None
    # When set, the runner picks each lane's loads itself until it finds the capacity.
    capacity: CapacitySearch | None = None
    # Synthetic prompts of exact token lengths, built per lane by its engine's tokenizer
    # (lib/load/synthetic.py): {"input_tokens", "output_tokens", "shared_prefix_tokens"}.
    synthetic: dict[str, Any] | None = None
    # Load-generator processes (lib/load/worker_pool.py); None: as many as the load needs
    # (lib/load/worker_count.py). The count used is in the run's settings.
    workers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        data["lanes"] = [LaneSpec.from_dict(lane) for lane in data["lanes"]]
        data["prompts"] = [Prompt(**p) for p in data["prompts"]]
        data["sampling"] = Sampling(**data.get("sampling", {}))
        data["load"] = LoadPattern(**(data.get("load") or {}))
        data["slo"] = Slo.from_dict(data.get("slo"))
        capacity = data.get("capacity")
        data["capacity"] = CapacitySearch(**capacity) if capacity else None
        return cls(**data)


@dataclass
class RequestResult:
    """What one streamed request gave, as raw timestamps; metrics.py derives the rest.

    Times are `time.perf_counter()` seconds. `chunk_times` holds the arrival time of
    every output-bearing chunk (content, reasoning or tool call), nothing else.
    `t_first_reasoning` is the arrival of the first chunk carrying reasoning (vLLM's
    `reasoning` / `reasoning_content` delta, Ollama's `thinking`), `t_first_answer`
    that of the first answer chunk (content or tool call); None when there was none.
    A chunk carrying both sets both. When neither is set but chunks arrived (a result
    whose maker did not tell them apart), every chunk counts as answer.
    """

    t_send: float
    t_done: float
    chunk_times: list[float] = field(default_factory=list)
    t_first_reasoning: float | None = None
    t_first_answer: float | None = None
    output_text: str = ""
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    # "server" when the server reported it; "none" when it gave no count (then
    # output_tokens stays None and rate metrics are left out, never guessed).
    # "server-tokenizer": output text re-counted by the server's tokenizer (can differ slightly).
    token_source: str = "none"
    finish_reason: str | None = None
    error: str | None = None  # one-line reason, None when the request completed
    server: dict[str, Any] | None = None  # engine-side timings (Ollama, llama.cpp)


@dataclass
class ModelInfo:
    """A model an endpoint can serve, with what is known of it."""

    name: str
    quantization: str | None = None
    parameter_size: str | None = None
    family: str | None = None
    context_length: int | None = None
    digest: str | None = None  # Ollama digest, or vLLM's root (path / HF id)
    size_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineInfo:
    """What answers at an endpoint."""

    kind: str  # "ollama", "vllm", "llama.cpp" or "openai" (generic)
    api: EngineKind  # which client dialect talks to it
    base_url: str
    version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """One telemetry reading. `t` is wall-clock seconds since the epoch."""

    t: float
    source: str  # "nvml", "vllm", "ollama", "llama.cpp"
    name: str  # as the engine names it, e.g. "kv_cache_usage_perc", "size_vram"
    value: float
    labels: dict[str, str] = field(default_factory=dict)
