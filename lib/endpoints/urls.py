"""Endpoint URLs: checking a user-typed base URL, redacting it, and normalising it.

url_key decides when two URLs name the same server (the registry keeps one entry per
server); messages and tables show URLs through redact_url so no password leaks.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MAX_URL_LEN = 2048


def validate_url(url: str) -> None:
    """Raise ValueError with one line for an unusable base URL (the rules of the Engines
    page: http(s), a host, a valid port, no credentials, query or fragment)."""
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
