"""Who uses the dashboard and what they may do: the sign-in gate and the two roles.

An *operator* starts and cancels runs, relabels and deletes them, saves endpoints and
votes; a *viewer* reads everything and changes nothing (its store connections are
read-only, so it never migrates the schema either). The role is decided, in order:

1. ``SERVESCOPE_ROLE=viewer``: every session of this process is a viewer (after signing
   in, where a sign-in is configured).
2. An ``[auth]`` table in ``.streamlit/secrets.toml``: Streamlit's own OIDC login
   (``st.login``) is required; ``[servescope] operators`` lists who operates (emails, or
   ``@domain`` entries), everyone else signed in views; with no list every signed-in user
   operates. An optional ``[servescope] viewers`` list narrows who may look at all.
3. ``[servescope] password`` (and optionally ``viewer_password``) without ``[auth]``: a
   password form; the role lives in this browser session only.
4. None of these: local use, an operator, no gate (the dashboard's default on 127.0.0.1).

A secrets file that exists but cannot be read (a TOML error) closes the dashboard: taken
for "no sign-in configured" it would open a shared dashboard to everyone as an operator.

Pages ask ``can_write()`` before drawing a write control; app.py draws every page inside
``store_scope()`` so that a viewer's connections are read-only even where a page forgot.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import streamlit as st
from streamlit.errors import StreamlitAuthError

from lib import store
from lib.app.formatting import esc_md
from lib.app.session import streamlit_secrets
from lib.core.identity import current_user

OPERATOR = "operator"
VIEWER = "viewer"
LOCAL, LOGIN, PASSWORD, CLOSED = "local", "login", "password", "closed"
SECTION = "servescope"  # our table in secrets.toml
SIGNED_IN = "servescope_signed_in"  # session_state after a password sign-in: role and name
ROLE_VAR = "SERVESCOPE_ROLE"


@dataclass(frozen=True)
class Settings:
    """How this dashboard signs people in, from secrets (never shown, never logged)."""

    mode: str = LOCAL
    operators: tuple[str, ...] | None = None
    viewers: tuple[str, ...] | None = None
    password: str | None = None
    viewer_password: str | None = None
    providers: tuple[str, ...] = ()  # named [auth.NAME] providers; () is the unnamed one

    def __repr__(self) -> str:  # the passwords must not reach a log or an error page
        return f"Settings(mode={self.mode!r})"


@dataclass(frozen=True)
class Access:
    """This session's user: role (None until signed in), name recorded with their runs."""

    mode: str
    role: str | None
    name: str
    refused: str | None = None  # signed in, but not on this dashboard's lists

    @property
    def signed_in(self) -> bool:
        return self.role is not None

    @property
    def can_write(self) -> bool:
        return self.role == OPERATOR


def process_viewer() -> bool:
    """Whether this whole process serves viewers only (SERVESCOPE_ROLE=viewer)."""
    return os.environ.get(ROLE_VAR, "").strip().lower() == VIEWER


def settings(secrets: Mapping[str, Any] | None) -> Settings:
    """The sign-in settings in `secrets` (st.secrets, or any mapping in tests)."""
    if not secrets:
        return Settings()
    ours = _table(secrets, SECTION)
    operators = _entries(ours.get("operators"))
    viewers = _entries(ours.get("viewers"))
    auth = _table(secrets, "auth")
    if auth:
        providers = tuple(k for k, v in auth.items() if isinstance(v, Mapping))
        return Settings(LOGIN, operators, viewers, providers=providers)
    password = str(ours.get("password") or "") or None
    viewer_password = str(ours.get("viewer_password") or "") or None
    if password or viewer_password:
        return Settings(PASSWORD, password=password, viewer_password=viewer_password)
    return Settings()


def _table(secrets: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    try:
        value = secrets.get(name)
    except Exception:  # st.secrets raises when there is no secrets.toml
        return {}
    return value if isinstance(value, Mapping) else {}


def _entries(value: Any) -> tuple[str, ...] | None:
    """A list of emails / @domains, lower-cased; None when not given."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().lower() for v in items if str(v).strip())


def listed(email: str, entries: Sequence[str]) -> bool:
    """Whether `email` is in a list of emails and ``@domain`` entries (case-insensitive)."""
    email = email.strip().lower()
    if not email:
        return False
    return any(email == e or (e.startswith("@") and email.endswith(e)) for e in entries)


def login_role(user: Mapping[str, Any], chosen: Settings) -> tuple[str | None, str | None]:
    """(role, refusal) for a user signed in through st.login (st.user as a mapping).

    Listed operators operate; with no operators list and no viewers list everyone signed
    in operates; otherwise everyone signed in views, unless a viewers list leaves them out.
    """
    if not user.get("is_logged_in"):
        return None, None
    email = str(user.get("email") or "")
    if chosen.operators and listed(email, chosen.operators):
        return OPERATOR, None
    if chosen.operators is None and chosen.viewers is None:
        return OPERATOR, None
    if chosen.viewers is None or listed(email, chosen.viewers):
        return VIEWER, None
    who = email or "this account"
    return None, f"{who} may not use this dashboard; ask its operator to add you."


def password_role(given: str, chosen: Settings) -> str | None:
    """The role a password grants (compared in constant time), or None."""
    entered = given.encode()
    if chosen.password and hmac.compare_digest(entered, chosen.password.encode()):
        return OPERATOR
    if chosen.viewer_password and hmac.compare_digest(entered, chosen.viewer_password.encode()):
        return VIEWER
    return None


def configured() -> Settings:
    """This dashboard's sign-in settings; CLOSED when a secrets file exists unread."""
    secrets = streamlit_secrets()
    if secrets is None and _unreadable_secrets():
        return Settings(CLOSED)
    return settings(secrets)


def _unreadable_secrets() -> bool:
    """Whether a secrets file Streamlit looks for is there but did not load (st.secrets
    takes a file it cannot parse for a missing one)."""
    try:
        if st.secrets.load_if_toml_exists():
            return False
        paths = st.get_option("secrets.files") or []
    except Exception:
        return True
    return any(Path(path).expanduser().exists() for path in paths)


def current() -> Access:
    """This session's access, without drawing anything."""
    chosen = configured()
    access = _access(chosen)
    if access.role is not None and process_viewer():
        return Access(access.mode, VIEWER, access.name)
    return access


def _access(chosen: Settings) -> Access:
    if chosen.mode == LOGIN:
        user = _user()
        role, refused = login_role(user, chosen)
        name = str(user.get("email") or user.get("name") or "") or "signed-in user"
        return Access(LOGIN, role, name if role or refused else "", refused)
    if chosen.mode == CLOSED:
        return Access(CLOSED, None, "")
    if chosen.mode == PASSWORD:
        signed = st.session_state.get(SIGNED_IN)
        if isinstance(signed, Mapping) and signed.get("role") in (OPERATOR, VIEWER):
            return Access(PASSWORD, str(signed["role"]), str(signed.get("name") or ""))
        return Access(PASSWORD, None, "")
    return Access(LOCAL, VIEWER if process_viewer() else OPERATOR, current_user())


def _user() -> Mapping[str, Any]:
    try:
        return st.user.to_dict()
    except Exception:  # no script context (a unit test) or a host without st.user
        return {}


def can_write() -> bool:
    """Whether this session may change anything (start, cancel, delete, save, vote)."""
    return current().can_write


def user_name() -> str:
    """Who this session is, recorded as a run's started_by."""
    return current().name or current_user()


@contextmanager
def store_scope() -> Iterator[None]:
    """Store connections opened inside are read-only unless this session operates.

    app.py wraps every page run in it; a fragment's rerun does not run app.py, so a
    fragment that writes wraps its own body too."""
    with store.read_only(not can_write()):
        yield


def gate() -> Access:
    """This session's access; until signed in, the sign-in page and st.stop()."""
    access = current()
    if access.signed_in:
        return access
    _sign_in_page(access)


def _sign_in_page(access: Access) -> NoReturn:
    chosen = configured()
    st.title("servescope")
    if chosen.mode == CLOSED:
        st.error(
            "Closed: .streamlit/secrets.toml cannot be read (a TOML error?), so who may "
            "sign in is unknown. Fix it and reload."
        )
    elif access.refused:
        st.error(esc_md(access.refused))
        if st.button("Sign out", key="access-sign-out-refused"):
            st.logout()
    elif chosen.mode == LOGIN:
        _login_buttons(chosen)
    else:
        _password_form(chosen)
    st.stop()


def _login_buttons(chosen: Settings) -> None:
    st.caption("Sign in to see this team's benchmarks.")
    for provider in chosen.providers or (None,):
        label = f"Sign in with {provider}" if provider else "Sign in"
        if st.button(label, type="primary", key=f"access-login-{provider or 'default'}"):
            try:
                st.login(provider)
            except StreamlitAuthError as exc:
                # One line: a missing Authlib or an incomplete [auth] table.
                st.error(esc_md(" ".join(str(exc).split())))


PASSWORD_KEY = "access-password"
WRONG = "access-wrong"  # session_state: the last password tried was wrong (not the password)


def _password_form(chosen: Settings) -> None:
    st.caption("This dashboard is shared: enter its password.")
    with st.form("access-password-form", clear_on_submit=True):
        st.text_input("Password", type="password", key=PASSWORD_KEY)
        st.text_input(
            "Your name (optional)",
            key="access-name",
            max_chars=60,
            help="Recorded with the runs you start.",
        )
        st.form_submit_button(
            "Sign in", type="primary", key="access-sign-in", on_click=_check_password
        )
    if st.session_state.pop(WRONG, False):
        st.error("Wrong password.")


def _check_password() -> None:
    """The sign-in button's callback: it runs before the page, so the password is checked
    and wiped from the session before anything is drawn (the browser clears its field)."""
    given = str(st.session_state.get(PASSWORD_KEY) or "")
    st.session_state[PASSWORD_KEY] = ""
    role = password_role(given, configured())
    if role is None:
        st.session_state[WRONG] = True
        return
    name = str(st.session_state.get("access-name") or "").strip()
    st.session_state[SIGNED_IN] = {"role": role, "name": name or current_user()}


def sign_out() -> None:
    """End this session's sign-in (st.logout for a login; forget a password sign-in)."""
    if current().mode == LOGIN:
        st.logout()
        return
    st.session_state.pop(SIGNED_IN, None)
    st.rerun()
