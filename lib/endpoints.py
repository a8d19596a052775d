"""The endpoint registry: which engine endpoints exist, what answers at each, and keys.

Endpoints come from three places, merged and de-duplicated by normalised URL:
the defaults (Ollama on 11434, vLLM on 8000, overridable by environment), the
sandbox's engines while `.sandbox/state.json` says they run, and the endpoints a
user saved on the Engines page (the `endpoints` table of the store).

Only the *name* of an API key's environment variable is ever stored. The key value
is read from the environment or `.streamlit/secrets.toml` at the moment it is
needed and never put in a record, a repr, an error message or a log.

No streamlit import here: the Run page, the Engines page, the sidebar and tests
all call these functions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import sqlite3
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from lib import store
from lib.records import ModelInfo

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_VLLM_URL = "http://127.0.0.1:8000/v1"
OLLAMA_URL_ENV = "SERVESCOPE_OLLAMA_URL"
VLLM_URL_ENV = "SERVESCOPE_VLLM_URL"
DEFAULT_OLLAMA_NAME = "ollama (default)"
DEFAULT_VLLM_NAME = "vllm (default)"
SANDBOX_PREFIX = "sandbox: "

APIS = ("ollama", "openai")
SOURCES = ("default", "sandbox", "saved")
MAX_NAME_LEN = 64
MAX_URL_LEN = 2048
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Engine kinds the sandbox reports, mapped to the client dialect that speaks to them.
_KIND_TO_API = {"ollama": "ollama", "vllm": "openai", "llama.cpp": "openai", "openai": "openai"}

T = TypeVar("T")


@dataclass
class Endpoint:
    """An engine endpoint the dashboard knows about."""

    name: str
    url: str
    api: str | None  # "ollama" | "openai" | None (auto-detect)
    api_key_env: str | None = None  # the NAME of an environment variable, never a key
    source: str = "saved"  # "default" | "sandbox" | "saved"


@dataclass
class EndpointStatus:
    """What a probe of one endpoint found."""

    endpoint: Endpoint
    reachable: bool
    engine: str | None  # "ollama", "vllm", "llama.cpp", "openai"
    api: str | None  # the dialect that answered: "ollama" or "openai"
    version: str | None
    models: list[ModelInfo] = field(default_factory=list)
    error: str | None = None  # one line, never contains the API key
    base_url: str = ""  # normalised; the URL a lane should use


# --- validation ---------------------------------------------------------------------


def validate_endpoint(name: str, url: str, api_key_env: str | None) -> None:
    """Raise ValueError with one clear line when a user-entered endpoint is unusable."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("Endpoint name is empty.")
    if len(name) > MAX_NAME_LEN:
        raise ValueError(f"Endpoint name is longer than {MAX_NAME_LEN} characters.")
    if not name.isprintable():
        raise ValueError("Endpoint name has control characters; use printable text only.")
    if name != name.strip():
        raise ValueError("Endpoint name starts or ends with spaces.")
    if name in (DEFAULT_OLLAMA_NAME, DEFAULT_VLLM_NAME) or name.startswith(SANDBOX_PREFIX):
        raise ValueError(f"Endpoint name {name!r} is reserved for a built-in endpoint.")
    _validate_url(url)
    if api_key_env is not None and api_key_env != "" and not ENV_NAME_RE.match(api_key_env):
        raise ValueError(
            "API key variable must be an environment variable NAME such as MY_API_KEY"
            " (letters, digits, underscore; not starting with a digit), not the key itself."
        )


def _validate_url(url: str) -> None:
    if not isinstance(url, str) or not url.strip():
        raise ValueError("URL is empty.")
    shown = redact_url(url)  # messages must not repeat a password typed into the URL
    if len(url) > MAX_URL_LEN or not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError("URL has spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError(f"Invalid URL {shown!r}: the port must be a number 1–65535.") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"Invalid URL {shown!r}: it must start with http:// or https://.")
    if not parts.hostname:
        raise ValueError(f"Invalid URL {shown!r}: no host name.")
    if port == 0:
        raise ValueError(f"Invalid URL {shown!r}: the port must be a number 1–65535.")
    # Credentials in the URL would be saved in the database; keys go in an env var.
    if parts.username or parts.password:
        raise ValueError(
            "Invalid URL: remove the user:password@ part; put the key in an environment"
            " variable and give its name instead."
        )
    if parts.query or parts.fragment:
        raise ValueError(f"Invalid URL {shown!r}: no ?query or #fragment, only the base URL.")


# --- URLs -----------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by ***@, for tables and messages."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{head}{sep}{netloc}{slash}{path}"


def normalize_url(url: str) -> str:
    """The URL with a lower-case scheme and host and no trailing slash."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def url_key(url: str) -> str:
    """What makes two URLs the same server: loopback names, default ports and /v1 folded."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower()
    if host in ("localhost", "::1", "0.0.0.0"):
        host = "127.0.0.1"
    path = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    return f"{parts.scheme.lower()}://{host}:{port}{path}"


# --- the registry ---------------------------------------------------------------------


def default_endpoints() -> list[Endpoint]:
    """The default Ollama and vLLM endpoints; env vars override, an empty one disables."""
    out = []
    for name, env, default, api in (
        (DEFAULT_OLLAMA_NAME, OLLAMA_URL_ENV, DEFAULT_OLLAMA_URL, "ollama"),
        (DEFAULT_VLLM_NAME, VLLM_URL_ENV, DEFAULT_VLLM_URL, "openai"),
    ):
        url = os.environ.get(env, default).strip()
        if url:
            out.append(Endpoint(name=name, url=url, api=api, source="default"))
    return out


def sandbox_endpoints() -> list[Endpoint]:
    """The sandbox's engines, when it is installed, enabled and records running engines."""
    if os.environ.get("SERVESCOPE_SANDBOX", "").lower() == "off":
        return []
    try:
        import sandbox  # lazy: the dashboard works without the sandbox package

        status = sandbox.status()
    except Exception:
        # Absent, not yet providing status(), or a broken state file: no sandbox lanes.
        return []
    out = []
    for eng in (status or {}).get("engines", []) if isinstance(status, dict) else []:
        if not isinstance(eng, dict) or not eng.get("base_url"):
            continue
        kind = str(eng.get("kind") or "")
        out.append(
            Endpoint(
                name=SANDBOX_PREFIX + str(eng.get("name") or kind or "engine"),
                url=str(eng["base_url"]),
                api=_KIND_TO_API.get(kind),
                source="sandbox",
            )
        )
    return out


def saved_endpoints(db: str | os.PathLike[str] | None = None) -> list[Endpoint]:
    """The endpoints saved in the store."""
    with store.opened(db) as conn:
        rows = store.list_endpoints(conn)
    return [
        Endpoint(
            name=r["name"],
            url=r["url"],
            api=r["kind"] if r["kind"] in APIS else None,
            api_key_env=r["api_key_env"] or None,
            source="saved",
        )
        for r in rows
    ]


def configured_endpoints(db: str | os.PathLike[str] | None = None) -> list[Endpoint]:
    """Defaults, then sandbox engines, then saved endpoints, one per normalised URL.

    Where two point at the same server, the saved one wins (it carries the user's
    name and key variable), then the sandbox's; the order stays default, sandbox, saved.
    """
    try:
        saved = saved_endpoints(db)
    except (sqlite3.Error, OSError, RuntimeError):
        saved = []  # an unreadable store must not hide the built-in endpoints
    groups = (default_endpoints(), sandbox_endpoints(), saved)
    winners: dict[str, Endpoint] = {}
    for group in reversed(groups):
        for ep in group:
            winners.setdefault(url_key(ep.url), ep)
    chosen = {id(ep) for ep in winners.values()}
    return [ep for group in groups for ep in group if id(ep) in chosen]


def find_endpoint(name: str, db: str | os.PathLike[str] | None = None) -> Endpoint | None:
    """The configured endpoint with this name, if any."""
    return next((ep for ep in configured_endpoints(db) if ep.name == name), None)


def save_endpoint(
    endpoint: Endpoint,
    db: str | os.PathLike[str] | None = None,
    replaces: str | None = None,
) -> None:
    """Validate and save an endpoint: a new one, or the saved one named `replaces`
    (which may be renamed this way).

    Raises ValueError (one line) on bad input or when the name is taken.
    """
    key_env = endpoint.api_key_env or None
    validate_endpoint(endpoint.name, endpoint.url, key_env)
    if endpoint.api is not None and endpoint.api not in APIS:
        raise ValueError(f"API must be one of {', '.join(APIS)} or auto-detect.")
    url = normalize_url(endpoint.url)
    with store.opened(db) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            taken = {r["name"] for r in store.list_endpoints(conn)}
            if endpoint.name in taken and endpoint.name != replaces:
                raise ValueError(f"An endpoint named {endpoint.name!r} already exists.")
            if replaces and replaces != endpoint.name:
                store.delete_endpoint(conn, replaces)
            store.save_endpoint(conn, endpoint.name, url, endpoint.api, key_env)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def remove_endpoint(name: str, db: str | os.PathLike[str] | None = None) -> bool:
    """Delete a saved endpoint; False when there was none by that name."""
    with store.opened(db) as conn:
        return store.delete_endpoint(conn, name)


# --- API keys -------------------------------------------------------------------------


def resolve_api_key(endpoint: Endpoint, secrets: Mapping[str, Any] | None = None) -> str | None:
    """The endpoint's key: the env var named api_key_env, else that name in `secrets`.

    `secrets` is st.secrets (or any mapping): a top-level `NAME = "key"` or one under an
    `[api_keys]` table. None when the endpoint has no key variable or it is unset.
    """
    name = endpoint.api_key_env
    if not name:
        return None
    value = os.environ.get(name)
    if value:
        return value
    if secrets is None:
        return None
    try:
        value = secrets.get(name)
        if not value:
            table = secrets.get("api_keys")
            value = table.get(name) if isinstance(table, Mapping) else None
    except Exception:  # st.secrets raises when there is no secrets.toml
        return None
    return str(value) if value else None


def _scrub(message: str, secret: str | None) -> str:
    """One line, no key: engines' messages may echo headers or URLs back."""
    line = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "")
    if secret:
        line = line.replace(secret, "***")
    return line[:300] or "unknown error"


# --- probing --------------------------------------------------------------------------


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from code that already runs inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def probe_async(
    endpoint: Endpoint, timeout: float = 3.0, api_key: str | None = None
) -> EndpointStatus:
    """Detect what answers at the endpoint and list its models; never raises."""
    try:
        from lib.engines import make_engine
        from lib.engines.base import EngineError, EngineUnreachable
        from lib.engines.detect import detect
    except ImportError as exc:  # adapters missing or broken: say so, do not raise
        return EndpointStatus(
            endpoint, False, None, None, None, [], _scrub(f"Engine adapters: {exc}", None), ""
        )
    try:
        _validate_url(endpoint.url)
    except ValueError as exc:
        return EndpointStatus(endpoint, False, None, None, None, [], str(exc), endpoint.url)
    base_url = normalize_url(endpoint.url)
    status = EndpointStatus(endpoint, False, None, endpoint.api, None, [], None, base_url)
    engine = None
    try:
        # Several requests go out (detection, version, models); bound the whole probe.
        async with asyncio.timeout(timeout * 3 + 1):
            if endpoint.api:
                engine = make_engine(endpoint.api, base_url, api_key=api_key)
                info = await engine.info()
            else:
                info = await detect(base_url, api_key=api_key, timeout=timeout)
                engine = make_engine(info.api, info.base_url, api_key=api_key)
            status.reachable, status.engine, status.api = True, info.kind, info.api
            status.version, status.base_url = info.version, info.base_url or base_url
            status.models = list(await engine.list_models())
            if not status.models:
                status.error = "The endpoint answers but serves no models."
    except TimeoutError:
        status.error = f"No answer within {timeout * 3 + 1:g} s."
    except EngineUnreachable as exc:
        status.reachable = False
        status.error = _scrub(str(exc), api_key)
    except EngineError as exc:
        status.error = _scrub(str(exc), api_key)
    except Exception as exc:  # a probe must never take the page down
        status.error = _scrub(f"{type(exc).__name__}: {exc}", api_key)
    finally:
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.aclose()
    return status


def probe(
    endpoint: Endpoint, timeout: float = 3.0, secrets: Mapping[str, Any] | None = None
) -> EndpointStatus:
    """Probe one endpoint synchronously; never raises."""
    key = resolve_api_key(endpoint, secrets)
    return _run_sync(probe_async(endpoint, timeout, key))


def probe_all(
    endpoints: Iterable[Endpoint],
    timeout: float = 3.0,
    secrets: Mapping[str, Any] | None = None,
) -> list[EndpointStatus]:
    """Probe every endpoint at once (in one event loop), in the given order."""
    eps = list(endpoints)

    async def run_all() -> list[EndpointStatus]:
        return list(
            await asyncio.gather(
                *(probe_async(ep, timeout, resolve_api_key(ep, secrets)) for ep in eps)
            )
        )

    return _run_sync(run_all()) if eps else []


# --- tables ---------------------------------------------------------------------------


def status_rows(
    statuses: Sequence[EndpointStatus], secrets: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A table row per endpoint: where it is, what answers, how many models, key state.

    The key column names the variable and says whether it is set, never its value.
    """
    rows = []
    for s in statuses:
        e = s.endpoint
        key = None
        if e.api_key_env:
            found = resolve_api_key(e, secrets) is not None
            key = f"{e.api_key_env} ({'set' if found else 'not set'})"
        rows.append(
            {
                "name": e.name,
                "source": e.source,
                "url": redact_url(s.base_url or e.url),
                "reachable": s.reachable,
                "engine": s.engine,
                "version": s.version,
                "models": len(s.models),
                "api_key": key,
                "problem": s.error,
            }
        )
    return rows


def status_line(status: EndpointStatus) -> str:
    """'vllm 0.33.0 — 1 model', or 'down' when nothing usable answered."""
    if not status.reachable:
        return "down"
    n = len(status.models)
    what = f"{status.engine or 'engine'} {status.version or ''}".strip()
    return f"{what} — {n} model{'s' if n != 1 else ''}"


def served_line(model: ModelInfo) -> str:
    """What a one-model endpoint serves, in one line of plain text."""
    quant = model.quantization or guess_quantization(model.name, model.digest)
    line = f"Serves {model.name} · quantization {quant or 'not announced'}"
    line += f" · context {model.context_length or '?'} tokens"
    if model.digest and model.digest != model.name:
        line += f" · from {model.digest}"
    return line


def served_model(status: EndpointStatus) -> ModelInfo | None:
    """The one model an OpenAI-compatible endpoint serves (vLLM, llama.cpp), else None."""
    if status.api == "openai" and len(status.models) == 1:
        return status.models[0]
    return None


# --- models ---------------------------------------------------------------------------


def model_rows(models: Sequence[ModelInfo]) -> list[dict[str, Any]]:
    """A table row per model: name, quantization, size, context length, digest."""
    rows = []
    for m in models:
        rows.append(
            {
                "model": m.name,
                "quantization": m.quantization or guess_quantization(m.name, m.digest),
                "parameters": m.parameter_size,
                "family": m.family,
                "context_length": m.context_length,
                "size_gb": round(m.size_bytes / 1e9, 2) if m.size_bytes else None,
                "digest": m.digest,
            }
        )
    return rows


# Quantization markers in model names, most specific first (Hugging Face repo names,
# GGUF file names, Ollama tags such as qwen2.5:7b-instruct-q4_K_M).
_QUANT_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"gptq[-_]?int4", "GPTQ-Int4"),
    (r"gptq[-_]?int8", "GPTQ-Int8"),
    (r"gptq", "GPTQ"),
    (r"awq", "AWQ"),
    (r"fp8[-_]?dynamic", "FP8-Dynamic"),
    (r"fp8", "FP8"),
    (r"w4a16", "W4A16"),
    (r"w8a8", "W8A8"),
    (r"bnb[-_]?4bit", "bnb-4bit"),
    (r"i?q[1-8]_[0-9a-z_]*?(?=$|[^0-9a-z_])", ""),  # GGUF types: q4_K_M, iq3_xs, q8_0
    (r"f16", "F16"),
    (r"bf16", "BF16"),
)


def guess_quantization(*names: str | None) -> str | None:
    """The quantization a model name (or root path) announces, e.g. AWQ or Q4_K_M.

    A heuristic on names only (vLLM's /v1/models has no quantization field,
    reference/engine_apis.md §2.5): shown as a hint, never recorded as a fact.
    """
    for name in names:
        if not name:
            continue
        tail = re.split(r"[/:]", name)[-1].lower()
        for pattern, label in _QUANT_PATTERNS:
            found = re.search(r"(?:^|[^0-9a-z])(" + pattern + r")(?=$|[^0-9a-z])", tail)
            if found:
                return label or found.group(1).upper()
    return None


# --- Ollama: pull another variant -----------------------------------------------------

# Ollama model names: [host/][namespace/]model[:tag] (types/model/name.go): parts of
# letters, digits, '.', '-', '_', starting with a letter or digit; host may carry a port.
OLLAMA_NAME_RE = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,349}(?::[0-9]{1,5})?/)?"
    r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,79}/){0,2}"
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,79})?$"
)


def validate_ollama_model(name: str) -> str:
    """The stripped model name, or ValueError with one line when Ollama would reject it."""
    cleaned = (name or "").strip()
    if not cleaned:
        raise ValueError("Model tag is empty; for example qwen2.5:7b-instruct-q8_0.")
    if len(cleaned) > 350 or not OLLAMA_NAME_RE.match(cleaned):
        raise ValueError(
            f"{cleaned[:80]!r} is not an Ollama model name: use name[:tag] with letters,"
            " digits, '.', '-' and '_', for example qwen2.5:7b-instruct-q8_0."
        )
    return cleaned


@dataclass
class PullProgress:
    """Where a pull stands: the latest status line and bytes over all layers."""

    status: str
    completed: int = 0
    total: int = 0

    @property
    def fraction(self) -> float | None:
        """0..1 once any layer size is known; None before (e.g. 'pulling manifest')."""
        return min(1.0, self.completed / self.total) if self.total else None


def pull_progress(layers: dict[str, tuple[int, int]], event: Mapping[str, Any]) -> PullProgress:
    """Fold one /api/pull event into `layers` ({digest: (completed, total)}).

    `completed` may be missing on a layer's first line (engine_apis.md §1.4); once
    Ollama reports 'success' every layer is complete.
    """
    status = str(event.get("status") or "")
    digest = event.get("digest")
    if digest and event.get("total"):
        total = int(event["total"])
        done = int(event.get("completed") or layers.get(digest, (0, total))[0])
        layers[digest] = (min(done, total), total)
    if status == "success":
        for digest_, (_, total) in list(layers.items()):
            layers[digest_] = (total, total)
    return PullProgress(
        status=status,
        completed=sum(c for c, _ in layers.values()),
        total=sum(t for _, t in layers.values()),
    )


def pull_model(
    base_url: str,
    model: str,
    api_key: str | None = None,
    on_progress: Any = None,
) -> PullProgress:
    """Pull `model` into the Ollama server at `base_url`, reporting each stream event.

    `on_progress(PullProgress)` is called in the caller's thread. Raises ValueError for
    a bad name and EngineError (one line, no key) when Ollama refuses or fails.
    """
    from lib.engines import make_engine
    from lib.engines.base import EngineError

    name = validate_ollama_model(model)

    async def run() -> PullProgress:
        engine = make_engine("ollama", base_url, api_key=api_key)
        layers: dict[str, tuple[int, int]] = {}
        last = PullProgress("starting")
        try:
            async for event in engine.pull(name):
                if event.get("error"):
                    raise EngineError(_scrub(f"Pull failed: {event['error']}", api_key))
                last = pull_progress(layers, event)
                if on_progress is not None:
                    on_progress(last)
        except EngineError as exc:
            raise EngineError(_scrub(str(exc), api_key)) from None
        except Exception as exc:
            message = f"Pull failed: {type(exc).__name__}: {exc}"
            raise EngineError(_scrub(message, api_key)) from None
        finally:
            with contextlib.suppress(Exception):
                await engine.aclose()
        if last.status != "success":
            raise EngineError(f"Pull of {name} ended without success (last: {last.status!r}).")
        return last

    return _run_sync(run())


# --- vLLM: the command that would serve another variant ---------------------------------

# (label, repo-name suffix, quantization as guess_quantization names it). Qwen and many
# other publishers name their quantized repos <base>-AWQ, -GPTQ-Int4, -GPTQ-Int8, -FP8.
VLLM_VARIANTS: tuple[tuple[str, str, str | None], ...] = (
    ("AWQ (4-bit)", "-AWQ", "AWQ"),
    ("GPTQ-Int4", "-GPTQ-Int4", "GPTQ-Int4"),
    ("GPTQ-Int8", "-GPTQ-Int8", "GPTQ-Int8"),
    ("FP8", "-FP8", "FP8"),
    ("unquantized (BF16)", "", None),
)
_SUFFIX_RE = re.compile(
    r"[-_](?:awq|gptq[-_]?int[48]|gptq|fp8(?:[-_]dynamic)?|w4a16|w8a8|bnb[-_]4bit|int[48])$",
    re.IGNORECASE,
)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_HF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class VllmVariant:
    """Another quantization of the served model and the command that serves it."""

    label: str
    model: str  # Hugging Face repo id or local folder
    quantization: str | None
    argv: list[str]

    @property
    def command(self) -> str:
        """The argv quoted for a POSIX shell, for the user to copy (never run here)."""
        import shlex

        return shlex.join(self.argv)


def base_model_name(model: str) -> str:
    """The model without its quantization suffix: Qwen/Qwen2.5-7B-Instruct-AWQ → …-Instruct."""
    return _SUFFIX_RE.sub("", model.rstrip("/"))


def variant_source(served: ModelInfo) -> str | None:
    """The repo id or folder whose quantization siblings can be named, or None.

    A Hugging Face id (org/name) always can; a local folder only when its name ends in
    a quantization (…-AWQ): "/models/hf" says nothing about what its siblings are called.
    """
    root = str(served.extra.get("root") or served.digest or "")
    for candidate in (root, served.name):
        if candidate and _HF_ID_RE.match(candidate):
            return candidate
    if "/" in root and _SUFFIX_RE.search(root.rstrip("/")):
        return root.rstrip("/")
    return None


def vllm_variants(
    served: ModelInfo, base_url: str, gpu_memory_utilization: float = 0.9
) -> list[VllmVariant]:
    """The `vllm serve` commands for the siblings of the served model's quantization.

    `served` is the one model the endpoint serves (its `digest` or extra["root"] is
    vLLM's `root`: the --model path or repo id). The commands keep the port and the
    context length so a lane pointed at this endpoint stays comparable. Empty when the
    siblings cannot be named (see variant_source).
    """
    source = variant_source(served)
    if source is None:
        return []
    current = guess_quantization(source) or (
        guess_quantization(served.quantization) if served.quantization else None
    )
    base = base_model_name(source)
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = (parts.hostname or "").lower()
    except ValueError:
        port, host = 8000, ""
    out = []
    for label, suffix, quant in VLLM_VARIANTS:
        if quant == current:
            continue  # the one already served (None: unquantized or unknown)
        model = base + suffix
        if model == source:
            continue  # no suffix on the served name: the bare base is what runs now
        # A local folder is served under its folder name; a repo under its id.
        served_name = model.rsplit("/", 1)[-1] if model.startswith(("/", ".", "~")) else model
        argv = ["vllm", "serve", model, "--served-model-name", served_name]
        if served.context_length:
            argv += ["--max-model-len", str(served.context_length)]
        argv += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}", "--port", str(port)]
        if host in _LOOPBACK:
            argv += ["--host", "127.0.0.1"]  # keep a local server off the network
        out.append(VllmVariant(label=label, model=model, quantization=quant, argv=argv))
    return out
