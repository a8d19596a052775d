"""What every page reads first: the store in use (as a cache key), the endpoints' statuses
(probed, cached ~10 s and shared by the sidebar and the Run page) and Streamlit's secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from lib import endpoints, store

ENDPOINT_TTL_S = 10


@st.cache_data(ttl=ENDPOINT_TTL_S, show_spinner=False)
def endpoint_statuses(db_key: str) -> list[endpoints.EndpointStatus]:
    """Every configured endpoint, probed (cached ~10 s: the sidebar and Run page share it)."""
    eps = endpoints.configured_endpoints(db_key)
    return endpoints.probe_all(eps, timeout=2.0, secrets=streamlit_secrets())


def streamlit_secrets() -> Mapping[str, Any] | None:
    try:
        return st.secrets if len(st.secrets) else None
    except Exception:  # no secrets.toml: keys come from the environment only
        return None


def db_key() -> str:
    """The store in use (a file path or the URL as configured), passed to the functions
    that open it and part of their cache keys (tests point SERVESCOPE_DB elsewhere).
    Never shown: the sidebar names it with store.target().label, without the password."""
    chosen = store.target()
    return str(chosen.path) if chosen.path is not None else str(chosen.url)
