"""Engine recipes: how to start one engine variant, as data.

A recipe names an engine (vLLM, llama.cpp or Ollama), the weights it serves and the
settings it starts with. lib/launch turns it into an argument list (never a shell string)
on loopback; a run whose lane carries a recipe starts that engine before the lane and
stops it afterwards. Engines the user runs elsewhere stay plain endpoints (no recipe).

Only the settings of the recipe's own engine may be set: a vLLM recipe with ``parallel``
is an error, so a typo never silently starts a default server. Everything here is
JSON-friendly; ``validate`` returns one-line errors, never raises on bad values.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

VLLM, LLAMA_CPP, OLLAMA = "vllm", "llama.cpp", "ollama"
ENGINES = (VLLM, LLAMA_CPP, OLLAMA)
# `executable` value that means "the sandbox's own install of this engine" (its venv's
# Python with the engine's server module); resolved by lib/launch, never a path.
SANDBOX = "sandbox"
# Each engine's usual command, looked up on the PATH when `executable` is empty.
DEFAULT_COMMANDS = {VLLM: "vllm", LLAMA_CPP: "llama-server", OLLAMA: "ollama"}

# Which settings belong to which engine (the rest of the fields are common).
ENGINE_SETTINGS: dict[str, tuple[str, ...]] = {
    VLLM: (
        "quantization",
        "dtype",
        "max_model_len",
        "gpu_memory_utilization",
        "max_num_seqs",
        "tensor_parallel_size",
    ),
    LLAMA_CPP: ("parallel", "ctx_size", "threads"),
    OLLAMA: ("num_parallel", "max_queue", "kv_cache_type", "flash_attention"),
}
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
DEFAULT_READY_TIMEOUT_S = 600.0
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_POSITIVE_INTS = (
    "max_model_len",
    "max_num_seqs",
    "tensor_parallel_size",
    "parallel",
    "ctx_size",
    "threads",
    "num_parallel",
    "max_queue",
)


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line for the user."""


@dataclass
class EngineRecipe:
    """One engine variant to start, measure and stop."""

    engine: str  # "vllm" | "llama.cpp" | "ollama"
    # vLLM: a Hugging Face id or folder; llama.cpp: a GGUF file; Ollama: the model tag.
    model: str
    # "" = the engine's usual command on the PATH; "sandbox"; or a path the operator allows.
    executable: str = ""
    name: str = ""  # the cell's name in tables and charts; built from the rest when empty
    variant: str = ""  # what the weights are, for people: "bf16", "AWQ", "Q4_K_M"
    served_model: str = ""  # the model name clients ask for (vLLM, llama.cpp)
    # vLLM
    quantization: str | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    tensor_parallel_size: int | None = None
    # llama.cpp
    parallel: int | None = None  # slots
    ctx_size: int | None = None
    threads: int | None = None
    # Ollama (its server's environment: OLLAMA_NUM_PARALLEL, ...)
    num_parallel: int | None = None
    max_queue: int | None = None
    kv_cache_type: str | None = None
    flash_attention: bool | None = None
    # Common
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # None: a free port picked at launch
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S

    @classmethod
    def from_dict(cls, data: Any) -> EngineRecipe:
        """A recipe from JSON; unknown keys and bad types are a RecipeError."""
        if not isinstance(data, dict):
            raise RecipeError("a recipe must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"unknown recipe field {unknown[0]!r}")
        for key in ("engine", "model"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                raise RecipeError(f"a recipe needs {key!r} (text)")
        try:
            recipe = cls(**data)
        except TypeError as exc:
            raise RecipeError(str(exc)) from None
        errors = recipe.validate()
        if errors:
            raise RecipeError(f"recipe {recipe.label()!r}: {errors[0]}")
        return recipe

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def settings(self) -> dict[str, Any]:
        """The engine settings this recipe sets (not its defaults), in field order."""
        names = ENGINE_SETTINGS.get(self.engine, ())
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def served(self) -> str:
        """The model name a client asks this engine for."""
        if self.engine == OLLAMA:
            return self.model
        if self.served_model:
            return self.served_model
        stem = PurePath(self.model).name
        return stem[: -len(".gguf")] if stem.endswith(".gguf") else stem

    def label(self) -> str:
        """The cell's name: given, or engine, variant and settings in a few words."""
        if self.name:
            return self.name
        words = [self.engine, self.variant or self.served()]
        words += [f"{short(k)} {v}" for k, v in self.settings().items() if k != "dtype"]
        if "dtype" in self.settings() and not self.variant:
            words.insert(2, str(self.dtype))
        return " · ".join(w for w in words if w)

    def lane_engine(self) -> str:
        """The client dialect a lane uses for this engine ("ollama" or "openai")."""
        return "ollama" if self.engine == OLLAMA else "openai"

    def validate(self) -> list[str]:
        """One-line problems, empty when the recipe can be launched."""
        errors: list[str] = []
        if self.engine not in ENGINES:
            return [f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}"]
        if not self.model or self.model.startswith("-"):
            errors.append("model must be a name or path that does not start with '-'")
        for engine, names in ENGINE_SETTINGS.items():
            if engine == self.engine:
                continue
            for name in names:
                if getattr(self, name) is not None and name not in ENGINE_SETTINGS[self.engine]:
                    errors.append(f"{name} is a {engine} setting, not one of {self.engine}")
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                errors.append(f"{name} must be a whole number of at least 1")
        gmu = self.gpu_memory_utilization
        if gmu is not None and (isinstance(gmu, bool) or not 0 < float(gmu) <= 1):
            errors.append("gpu_memory_utilization must be above 0 and at most 1")
        if self.kv_cache_type is not None and self.kv_cache_type not in KV_CACHE_TYPES:
            errors.append(f"kv_cache_type must be one of {', '.join(KV_CACHE_TYPES)}")
        if self.flash_attention is not None and not isinstance(self.flash_attention, bool):
            errors.append("flash_attention must be true or false")
        for name in ("quantization", "dtype", "served_model", "variant", "name"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                errors.append(f"{name} must be text")
        if self.served_model.startswith("-"):
            errors.append("served_model must not start with '-'")
        if not isinstance(self.extra_args, list) or not all(
            isinstance(a, str) and "\0" not in a for a in self.extra_args
        ):
            errors.append("extra_args must be a list of strings")
        if not isinstance(self.env, dict) or not all(
            isinstance(k, str) and _ENV_NAME.fullmatch(k) and isinstance(v, str) and "\0" not in v
            for k, v in self.env.items()
        ):
            errors.append("env must map UPPER_CASE names to strings")
        if self.port is not None and (
            not isinstance(self.port, int) or not 1024 <= self.port <= 65535
        ):
            errors.append("port must be a number from 1024 to 65535")
        timeout = self.ready_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            errors.append("ready_timeout_s must be a number of seconds above 0")
        return errors


_SHORT = {
    "max_num_seqs": "seqs",
    "gpu_memory_utilization": "gpu mem",
    "tensor_parallel_size": "tp",
    "max_model_len": "len",
    "parallel": "slots",
    "ctx_size": "ctx",
    "threads": "threads",
    "num_parallel": "parallel",
    "max_queue": "queue",
    "kv_cache_type": "kv",
    "flash_attention": "flash",
}


def short(setting: str) -> str:
    """A setting's name in a cell label ("max_num_seqs" -> "seqs")."""
    return _SHORT.get(setting, setting)


def recipes_from_json(data: Any) -> list[EngineRecipe]:
    """Recipes from a recipes file: a list, or {"recipes": [...]}; names made unique."""
    items = data.get("recipes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise RecipeError('a recipes file holds a non-empty list (or {"recipes": [...]})')
    recipes = [EngineRecipe.from_dict(item) for item in items]
    labels = [r.label() for r in recipes]
    for label in labels:
        if labels.count(label) > 1:
            raise RecipeError(f"two recipes are both named {label!r}; give each a name")
    return recipes


ALL_SETTINGS = tuple(name for names in ENGINE_SETTINGS.values() for name in names)


def parse_setting(text: str) -> tuple[str, list[Any]]:
    """ "max_num_seqs=1,4" -> ("max_num_seqs", [1, 4]); RecipeError on a bad one."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or name not in ALL_SETTINGS:
        raise RecipeError(
            f"--set takes NAME=V1,V2 with NAME one of {', '.join(ALL_SETTINGS)}, not {text!r}"
        )
    values = [_value(v.strip()) for v in raw.split(",") if v.strip()]
    if not values:
        raise RecipeError(f"--set {name}= has no values")
    return name, list(dict.fromkeys(values))


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def cross(recipes: list[EngineRecipe], grid: dict[str, list[Any]]) -> list[EngineRecipe]:
    """Each recipe once per combination of the ``grid`` settings its engine has (a grid
    setting of another engine leaves it as it is): variants x settings."""
    out: list[EngineRecipe] = []
    for recipe in recipes:
        combos: list[dict[str, Any]] = [{}]
        for name, values in grid.items():
            if name in ENGINE_SETTINGS.get(recipe.engine, ()):
                combos = [{**c, name: v} for c in combos for v in values]
        for combo in combos:
            out.append(dataclasses.replace(recipe, **combo) if combo else recipe)
    return out


def name_cells(recipes: list[EngineRecipe]) -> list[EngineRecipe]:
    """Give every unnamed recipe a short name: engine, variant, and only the settings
    that differ among recipes of its engine ("llama.cpp Q8_0", "vllm bf16 · seqs 4")."""
    named = []
    for recipe in recipes:
        if recipe.name:
            named.append(recipe)
            continue
        peers = [r for r in recipes if r.engine == recipe.engine]
        varying = [
            name
            for name in ENGINE_SETTINGS.get(recipe.engine, ())
            if name != "dtype" or not recipe.variant
            if len({repr(getattr(r, name)) for r in peers}) > 1
        ]
        words = [recipe.engine, recipe.variant or recipe.served()]
        words += [f"{short(n)} {getattr(recipe, n)}" for n in varying]
        named.append(dataclasses.replace(recipe, name=" · ".join(w for w in words if w)))
    return named
