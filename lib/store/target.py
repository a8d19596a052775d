"""Which database the store is: a SQLite file (the zero-setup default) or a PostgreSQL
URL, and how to name it in a message without its password.

`SERVESCOPE_DB` (or `--db`) holds either a file path or `postgresql://user:pw@host/db`.
A password may reach servescope only there; every message, log line and export names
the database through `describe`, and an error from the driver goes through `scrub`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DB = PROJECT_ROOT / "data" / "servescope.db"

# "postgresql://user:pw@host/db" and the like: a URL, never a file name. Taken for a path
# it became a folder named after it, password included, and the CLI reported success.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
POSTGRES_SCHEMES = ("postgresql", "postgres")
# A database URL mistyped ("postgresql:/user:pw@host/db", a leading space): still a URL,
# refused, rather than a path of folders holding the password.
_DB_SCHEME = re.compile(r"^(postgres(ql)?|mysql|mariadb|sqlite3?|mssql|oracle)[+:]", re.IGNORECASE)


class StoreError(RuntimeError):
    """The store cannot be opened (bad path, not a database, unreachable server, wrong
    credentials, older or newer schema); one line, never with a password."""


@dataclass(frozen=True)
class Target:
    """The database in use: `dialect` "sqlite" with `path`, or "postgresql" with `url`."""

    dialect: str
    path: Path | None = None
    url: str | None = None

    @property
    def name(self) -> str:
        """How messages name it: the file, or the URL without its password."""
        return str(self.path) if self.url is None else without_password(self.url)

    @property
    def label(self) -> str:
        """A short name for a page: "PostgreSQL team@db:5432/servescope", or the file."""
        if self.url is None:
            return str(self.path)
        try:
            parts = urlsplit(self.url)
            where = f"{parts.hostname or 'localhost'}{f':{parts.port}' if parts.port else ''}"
            user = f"{unquote(parts.username)}@" if parts.username else ""
        except ValueError:
            return self.name
        return f"PostgreSQL {user}{where}{parts.path or ''}"

    @property
    def local_dir(self) -> Path:
        """Where this machine keeps a run's files (jobs/, engine logs): beside a SQLite
        file; for a server database, $SERVESCOPE_DATA_DIR or data/ of this checkout."""
        if self.path is not None:
            return self.path.parent
        return Path(os.environ.get("SERVESCOPE_DATA_DIR") or DEFAULT_DB.parent).expanduser()


def target(db: str | os.PathLike[str] | None = None) -> Target:
    """The database to use: the argument, else $SERVESCOPE_DB, else data/servescope.db.

    StoreError for a URL of another kind than PostgreSQL's, or a mistyped one."""
    given = str(db or os.environ.get("SERVESCOPE_DB") or DEFAULT_DB)
    chosen = given.strip()
    if not (_URL.match(chosen) or _DB_SCHEME.match(chosen)):
        return Target("sqlite", path=Path(given).expanduser())
    scheme = re.split(r"[:+]", chosen, maxsplit=1)[0].lower()
    if scheme not in POSTGRES_SCHEMES:
        raise StoreError(
            f"{without_password(chosen)} is a database URL servescope cannot use: give a "
            "SQLite file path or a postgresql:// URL"
        )
    if not chosen.lower().startswith(f"{scheme}://"):
        raise StoreError(
            f"{without_password(chosen)} is not a database URL servescope can read: write "
            "postgresql://user:password@host:port/database"
        )
    # libpq reads the scheme in lower case only.
    return Target("postgresql", url=scheme + chosen[len(scheme) :])


def db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The SQLite file in use; StoreError when the store is a server database."""
    chosen = target(db)
    if chosen.path is None:
        raise StoreError(f"{chosen.name} is a server database, not a file")
    return chosen.path


def describe(db: str | os.PathLike[str] | None = None) -> str:
    """The store in use as messages and cache keys name it (never with its password)."""
    try:
        return target(db).name
    except StoreError:
        return without_password(str(db or os.environ.get("SERVESCOPE_DB") or ""))


# libpq also takes the password as a query parameter: "postgresql://u@h/db?password=pw".
_QUERY_PASSWORD = re.compile(r"(?<![^?&])(password=)[^&#]*", re.IGNORECASE)


def without_password(url: str) -> str:
    """``url`` with any password (after the user name, or `?password=`) replaced by ***,
    for messages; a mistyped database URL as its scheme only."""
    if not _URL.match(url):
        mistyped = _DB_SCHEME.match(url.strip())
        return f"{mistyped.group(0)}…" if mistyped else url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, host = netloc.rsplit("@", 1)
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
        if (netloc, query) == (parts.netloc, parts.query):
            return url
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        match = _URL.match(url)
        return (match.group(0) if match else "") + "…"


def passwords_of(url: str | None) -> set[str]:
    """Every password a database URL holds, as written and decoded (to scrub them from a
    driver's message)."""
    if not url:
        return set()
    try:
        parts = urlsplit(url)
        written = [parts.password or ""]
    except ValueError:
        return set()
    written += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(parts.query)]
    return {form for w in written for form in (w, unquote(w))} - {""}


def scrub(text: str, url: str | None) -> str:
    """`text` on one line, with the URL's password (as written and decoded) and any
    `password=...` setting masked: drivers may echo the connection string."""
    # Longest first: one password may hold another's decoded form.
    for secret in sorted(passwords_of(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
    if url:
        text = text.replace(url, without_password(url))
    return " ".join(text.split())
