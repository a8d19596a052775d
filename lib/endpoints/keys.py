"""API keys: resolving an endpoint's key at the moment it is needed, and scrubbing it.

Only the *name* of a key's environment variable is ever stored; the value is read from
the environment or `.streamlit/secrets.toml` and never put in a record, a repr, an
error message or a log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lib.endpoints.registry import Endpoint


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


def scrub(message: str, secret: str | None) -> str:
    """One line, no key: engines' messages may echo headers or URLs back."""
    line = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "")
    if secret:
        line = line.replace(secret, "***")
    return line[:300] or "unknown error"
