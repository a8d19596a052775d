"""The Engine protocol that the runner drives, and the errors adapters raise."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lib.core.records import EngineInfo, ModelInfo, Prompt, RequestResult, Sampling


class EngineError(Exception):
    """A one-line, user-facing reason an endpoint cannot be used."""


class EngineUnreachable(EngineError):
    """Nothing answers at the URL (refused, DNS failure, timeout)."""


class ModelNotFound(EngineError):
    """The endpoint answers but does not serve the model (HTTP 404)."""


@runtime_checkable
class Engine(Protocol):
    """One endpoint, spoken to in one API dialect.

    Adapters never raise from `chat`: every fault becomes `RequestResult.error`, so
    the runner accounts for every request. `info`, `list_models` and `check_model`
    raise EngineError subclasses with a one-line message.
    """

    base_url: str

    async def info(self) -> EngineInfo: ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def check_model(self, model: str) -> ModelInfo:
        """Return the model's info, or raise ModelNotFound / EngineUnreachable."""
        ...

    async def chat(
        self,
        model: str,
        prompt: Prompt,
        sampling: Sampling,
        timeout_s: float,
        num_ctx: int | None = None,
    ) -> RequestResult:
        """Stream one chat completion and time it (metric definitions: lib/core/metrics.py)."""
        ...

    async def count_tokens(self, model: str, text: str) -> int | None:
        """Tokens in `text` by the model's own tokenizer on the server, no special tokens
        and no chat template: what `text` adds as a user message's content.

        None when the server offers no way to count (no tokenizer endpoint: 404/405),
        so the caller can fall back to an estimate; never raises for that. Raises
        EngineUnreachable when nothing answers, ModelNotFound for an unknown model,
        EngineError for any other failure of the server.
        """
        ...

    async def aclose(self) -> None: ...
