"""Tell what answers at a URL: Ollama, vLLM, llama.cpp or a generic OpenAI-compatible server."""

from __future__ import annotations

import httpx

from lib.core.records import EngineInfo
from lib.engines.base import EngineError, EngineUnreachable
from lib.engines.common import check_url, exc_text
from lib.engines.openai_compat import OpenAICompatEngine


async def detect(url: str, api_key: str | None = None, timeout: float = 3.0) -> EngineInfo:
    """Identify the server at `url` and normalise its base URL.

    Accepts `http://host:11434`, `http://host:8000/v1` or `http://host:8000`. Ollama
    (GET / says "Ollama is running") gets kind "ollama", api "ollama" and its root as
    base_url, even when given its /v1 URL: the native API reports server timings.
    Anything else is probed as OpenAI-compatible at `<root>/v1` (see
    OpenAICompatEngine.info). Raises EngineError("invalid URL ...") for a malformed
    URL, EngineUnreachable when nothing answers, EngineError when something answers
    that speaks neither API.
    """
    root, path = check_url(url)
    base = root + path.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=timeout, headers=headers) as http:
        try:
            home = await http.get(base + "/")
        except httpx.TimeoutException:
            raise EngineUnreachable(f"no answer from {base} within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise EngineUnreachable(f"nothing answers at {base}: {exc_text(exc)}") from None
        if home.status_code == 200 and "Ollama is running" in home.text:
            version = None
            try:
                response = await http.get(base + "/api/version")
                if response.status_code == 200:
                    version = response.json().get("version")
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
            return EngineInfo("ollama", "ollama", base, version, {"openai_base_url": base + "/v1"})
    engine = OpenAICompatEngine(base + "/v1", api_key, meta_timeout_s=timeout)
    try:
        return await engine.info()
    except EngineUnreachable:
        raise
    except EngineError as exc:
        raise EngineError(
            f"{base} answers but not as Ollama or an OpenAI-compatible server ({exc})"
        ) from None
    finally:
        await engine.aclose()
