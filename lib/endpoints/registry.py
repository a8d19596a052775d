"""The endpoint registry: which engine endpoints exist, and saving or removing them.

Endpoints come from three places, merged and de-duplicated by normalised URL:
the defaults (Ollama on 11434, vLLM on 8000, overridable by environment), the
sandbox's engines while `.sandbox/state.json` says they run, and the endpoints a
user saved on the Engines page (the `endpoints` table of the store).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lib import store
from lib.endpoints.urls import normalize_url, redact_url, url_key, validate_url

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
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Engine kinds the sandbox reports, mapped to the client dialect that speaks to them.
_KIND_TO_API = {"ollama": "ollama", "vllm": "openai", "llama.cpp": "openai", "openai": "openai"}


@dataclass
class Endpoint:
    """An engine endpoint the dashboard knows about."""

    name: str
    url: str
    api: str | None  # "ollama" | "openai" | None (auto-detect)
    api_key_env: str | None = None  # the NAME of an environment variable, never a key
    source: str = "saved"  # "default" | "sandbox" | "saved"


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
    validate_url(url)
    if api_key_env is not None and api_key_env != "" and not ENV_NAME_RE.match(api_key_env):
        raise ValueError(
            "API key variable must be an environment variable NAME such as MY_API_KEY"
            " (letters, digits, underscore; not starting with a digit), not the key itself."
        )


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
    except store.database_errors():
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
    with store.opened(db) as conn, conn.transaction(exclusive=True):
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
