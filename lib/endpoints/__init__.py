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
from lib.core.records import ModelInfo
from lib.engines.common import guess_quantization as engine_guess_quantization

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


def validate_url(url: str) -> None:
    """Raise ValueError with one line for an unusable base URL (the rules of the Engines
    page: http(s), a host, a valid port, no credentials, query or fragment)."""
    _validate_url(url)


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


def _merged(
    db: str | os.PathLike[str] | None,
) -> tuple[list[Endpoint], list[tuple[Endpoint, Endpoint]]]:
    """The endpoints kept, one per server, and (hidden, kept instead) for the rest."""
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
    kept = [ep for group in groups for ep in group if id(ep) in chosen]
    hidden = [
        (ep, winners[url_key(ep.url)]) for group in groups for ep in group if id(ep) not in chosen
    ]
    return kept, hidden


def configured_endpoints(db: str | os.PathLike[str] | None = None) -> list[Endpoint]:
    """Defaults, then sandbox engines, then saved endpoints, one per normalised URL.

    Where two point at the same server, the saved one wins (it carries the user's
    name and key variable), then the sandbox's; the order stays default, sandbox, saved.
    """
    return _merged(db)[0]


def hidden_endpoints(
    db: str | os.PathLike[str] | None = None,
) -> list[tuple[Endpoint, Endpoint]]:
    """(hidden, kept instead) for sandbox and saved entries that another entry for the
    same server hides: save_endpoint refuses these now, but an older store may hold one.

    A default replaced by a sandbox or saved endpoint is left out: that is by design
    (the other names the same server better), not an entry the user would miss.
    """
    return [(h, by) for h, by in _merged(db)[1] if h.source != "default"]


def hidden_line(hidden: Endpoint, by: Endpoint) -> str:
    """One line saying which entry hides which, and how to list both."""
    line = (
        f"{by.name!r} ({redact_url(by.url)}) hides {hidden.name!r} ({redact_url(hidden.url)}):"
        " both are the same server."
    )
    if by.source == "saved":
        line += f" Remove {by.name!r} or change its URL to list both."
    return line


def _listed_at(url: str, others: Iterable[Endpoint]) -> Endpoint | None:
    """The entry among `others` (sandbox engines, other saved endpoints) for the same
    server as `url`. Defaults are not passed in: a saved endpoint at a default's URL
    replaces the default on purpose, with the user's name and key variable."""
    key = url_key(url)
    return next((e for e in others if url_key(e.url) == key), None)


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

    Raises ValueError (one line) on bad input, when the name is taken, or when a
    sandbox engine or another saved endpoint already stands for the same server.
    """
    key_env = endpoint.api_key_env or None
    validate_endpoint(endpoint.name, endpoint.url, key_env)
    if endpoint.api is not None and endpoint.api not in APIS:
        raise ValueError(f"API must be one of {', '.join(APIS)} or auto-detect.")
    url = normalize_url(endpoint.url)
    sandbox = sandbox_endpoints()  # read before the write lock is taken
    with store.opened(db) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = store.list_endpoints(conn)
            taken = {r["name"] for r in rows}
            if endpoint.name in taken and endpoint.name != replaces:
                raise ValueError(f"An endpoint named {endpoint.name!r} already exists.")
            # One entry per server: a second one would silently hide the first (the
            # registry lists a server once).
            saved = [Endpoint(r["name"], r["url"], None) for r in rows if r["name"] != replaces]
            if (other := _listed_at(url, [*sandbox, *saved])) is not None:
                raise ValueError(_listed_message(url, other))
            if replaces and replaces != endpoint.name:
                store.delete_endpoint(conn, replaces)
            store.save_endpoint(conn, endpoint.name, url, endpoint.api, key_env)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _listed_message(url: str, other: Endpoint) -> str:
    """'http://127.0.0.1:8000 is already listed as 'sandbox: vllm' (…/v1); use that entry…'."""
    where = "" if normalize_url(other.url) == url else f" ({redact_url(other.url)})"
    return (
        f"{redact_url(url)} is already listed as {other.name!r}{where};"
        " use that entry, or give another URL."
    )


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
                "size": size_label(m.size_bytes) if m.size_bytes else None,
                "digest": m.digest,
            }
        )
    return rows


def size_label(size_bytes: int) -> str:
    """'398 MB', '4.68 GB': decimal units as `ollama list` uses, three significant digits,
    so a 7 MB model does not read as 0.01 GB."""
    value = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        # Compare after rounding: 999.6 MB is "1 GB", not "1e+03 MB".
        if float(f"{value:.3g}") < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:,.3g} TB" if value < 1000 else f"{value:,.0f} TB"


def model_option(model: ModelInfo) -> str:
    """A model picker's label: 'qwen2.5-coder:0.5b · Q4_K_M · 398 MB'.

    Variants of one model differ only in quantization and size, so a bare name list
    hides the difference; parts that are unknown are left out.
    """
    row = model_rows([model])[0]
    parts = [model.name, row["quantization"], row["size"]]
    return " · ".join(p for p in parts if p)


def guess_quantization(*names: str | None) -> str | None:
    """The quantization a model's names (or local root) announce, e.g. AWQ or Q4_K_M.

    One rule for the whole tool (lib.engines.common): shown as a hint where an engine
    reports none, never recorded as a fact.
    """
    return engine_guess_quantization(*names)[0]
