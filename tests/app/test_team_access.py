"""A dashboard shared by a team (lib/app/access.py through app.py): the password gate, the
st.login gate with operators and viewers, a viewer who sees no write control and whose
store connections are read-only (never migrating), and who started a run.

st.user comes from AppTest.user; secrets from AppTest.secrets (the repo's own
.streamlit/secrets.toml is never read: every test sets the secrets it means).
"""

from __future__ import annotations

import re
import socket
import sqlite3
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
import streamlit as st
from streamlit.proto.TextInput_pb2 import TextInput as TextInputProto
from streamlit.testing.v1 import AppTest

from lib import endpoints, store
from lib.app import access
from tests.postgres_server import PostgresServer
from tests.quality.test_review import make_run

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
OPERATOR_PW = "op-7f3c9d2e-long-enough"
VIEWER_PW = "view-51aa0b6c-long-enough"
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret",
    "client_id": "servescope-test",
    "client_secret": "test-client-secret",
    "server_metadata_url": "https://login.example/.well-known/openid-configuration",
}


def _plain(elements: Any) -> list[str]:
    """Element texts with markdown escapes undone."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements]


def _everything(at: AppTest) -> str:
    """Every text the page shows, main area and sidebar."""
    kinds = ("title", "markdown", "caption", "info", "error", "warning", "success")
    parts: list[str] = []
    for kind in kinds:
        parts += _plain(getattr(at, kind)) + _plain(getattr(at.sidebar, kind))
    return "\n".join(parts)


def _keys(at: AppTest) -> set[str]:
    """Keys of the page's buttons (form submit buttons included)."""
    return {b.key for b in at.button if b.key}


def _app(secrets: dict[str, Any] | None = None, user: dict[str, Any] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    for name, value in (secrets or {}).items():
        at.secrets[name] = value
    if user is not None:
        at.user = user
    return at


def _ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def _sign_in(at: AppTest, password: str, name: str = "") -> AppTest:
    at.text_input(key="access-password").set_value(password)
    at.text_input(key="access-name").set_value(name)
    at.button(key="access-sign-in").click()
    return _ok(at)


def _migrated(path_or_url: str) -> None:
    """The store created and migrated by an operator."""
    with store.opened(path_or_url, read_only=False):
        pass


@pytest.fixture
def passwords() -> dict[str, Any]:
    return {"servescope": {"password": OPERATOR_PW, "viewer_password": VIEWER_PW}}


# -- password mode ---------------------------------------------------------------------


def test_password_gate_shows_nothing_until_the_right_password(db, passwords):
    at = _ok(_app(passwords))
    assert _plain(at.title) == ["servescope"]
    assert "Run a benchmark" not in _everything(at)
    assert "run_start" not in _keys(at)
    assert at.text_input(key="access-password").proto.type == TextInputProto.PASSWORD

    at = _sign_in(at, "not-the-password")
    assert _plain(at.error) == ["Wrong password."]
    assert "not-the-password" not in _everything(at)
    assert at.text_input(key="access-password").value == ""  # cleared, not kept
    assert "run_start" not in _keys(at)

    at = _sign_in(at, OPERATOR_PW, name="alice")
    assert "Run a benchmark" in _plain(at.title)
    assert "run_start" in _keys(at)
    assert any("alice · operator" in c for c in _plain(at.sidebar.caption))
    assert OPERATOR_PW not in _everything(at)
    assert OPERATOR_PW not in repr(access.settings(passwords))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page)
    return _ok(at)


def test_viewer_password_reads_and_sees_no_write_control(db, passwords):
    """What an operator may do on each page, a viewer signed in beside them may not."""
    make_run(db)  # two lanes with answers, for Compare
    box = endpoints.Endpoint("box", f"http://127.0.0.1:{_closed_port()}", "openai")
    endpoints.save_endpoint(box, db)
    operator = _sign_in(_ok(_app(passwords)), OPERATOR_PW)
    viewer = _sign_in(_ok(_app(passwords)), VIEWER_PW)
    assert "run_start" in _keys(operator)
    assert "run_start" not in _keys(viewer)
    assert any("viewer: reads only" in c for c in _plain(viewer.sidebar.caption))
    assert any("signed in as a viewer" in i for i in _plain(viewer.info))

    operator, viewer = (
        _page(operator, "app_pages/engines.py"),
        _page(viewer, "app_pages/engines.py"),
    )
    assert {"remove:box", "edit_go:box"} <= _keys(operator)
    assert "Add endpoint" in [b.label for b in operator.button]
    assert "Engines" in _plain(viewer.title)
    assert not any(k.startswith(("remove:", "edit_go:", "pull_go:")) for k in _keys(viewer))
    assert "Add endpoint" not in [b.label for b in viewer.button]
    assert any("operators add, edit and remove" in c for c in _plain(viewer.caption))

    operator, viewer = (
        _page(operator, "app_pages/compare.py"),
        _page(viewer, "app_pages/compare.py"),
    )
    assert not operator.toggle(key="compare_blind").proto.disabled
    assert viewer.toggle(key="compare_blind").proto.disabled
    viewer.session_state["compare_blind"] = True  # a forged value votes no more
    viewer = _ok(viewer)
    assert not any(k.startswith("compare-vote-") for k in _keys(viewer))
    assert any("Votes and win rates" in m for m in _plain(viewer.markdown))


def test_signing_out_shows_the_gate_again(db, passwords):
    at = _sign_in(_ok(_app(passwords)), OPERATOR_PW)
    at.button(key="sidebar-sign-out").click()
    at = _ok(at)
    assert _plain(at.title) == ["servescope"]
    assert "run_start" not in _keys(at)


def test_a_session_viewer_never_migrates_an_older_store(db, passwords):
    """A viewer opening a store whose schema is older gets the store's one line, and the
    schema stays as it was; the operator's session then migrates it."""
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA user_version = 3")
    raw.close()
    at = _sign_in(_ok(_app(passwords)), VIEWER_PW)
    assert len(at.error) == 1
    assert "a viewer never migrates it" in at.error[0].value
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
    raw.close()


@pytest.fixture
def secrets_file(tmp_path: Path) -> Iterator[Path]:
    """The one secrets file Streamlit's own st.secrets reads, for this test."""
    path = tmp_path / "secrets.toml"
    before = st.get_option("secrets.files")
    st.config.set_option("secrets.files", [str(path)])
    st.secrets._reset()
    yield path
    st.config.set_option("secrets.files", before)
    st.secrets._reset()


def test_an_unreadable_secrets_file_closes_the_dashboard(db, secrets_file):
    """Taken for "no sign-in configured" (st.secrets' reading of it), a broken file would
    open a shared dashboard to everyone as an operator."""
    secrets_file.write_text('[servescope]\npassword = "unterminated\n')
    at = _ok(_app())
    assert _plain(at.title) == ["servescope"]
    assert len(at.error) == 1 and "secrets.toml cannot be read" in at.error[0].value
    assert "run_start" not in _keys(at) and "access-password" not in {t.key for t in at.text_input}
    secrets_file.write_text(f'[servescope]\npassword = "{OPERATOR_PW}"\n')
    st.secrets._reset()
    at = _sign_in(_ok(_app()), OPERATOR_PW)
    assert "run_start" in _keys(at)


# -- SERVESCOPE_ROLE=viewer ------------------------------------------------------------


def test_a_viewer_process_hides_writes_and_its_store_refuses_them(db, monkeypatch):
    _migrated(str(db))
    monkeypatch.setenv("SERVESCOPE_ROLE", "viewer")
    at = _ok(_app())
    assert "Run a benchmark" in _plain(at.title)  # no sign-in configured: no gate
    assert "run_start" not in _keys(at)
    assert any("viewer: reads only" in c for c in _plain(at.sidebar.caption))
    with store.opened() as conn, pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.create_run(conn, "r1", {}, label="nope")


def test_a_viewer_process_overrides_an_operator_password(db, passwords, monkeypatch):
    _migrated(str(db))
    monkeypatch.setenv("SERVESCOPE_ROLE", "viewer")
    at = _sign_in(_ok(_app(passwords)), OPERATOR_PW)
    assert "run_start" not in _keys(at)
    assert any("viewer: reads only" in c for c in _plain(at.sidebar.caption))


# -- st.login (OIDC) -------------------------------------------------------------------


def test_login_gate_until_signed_in(db):
    at = _ok(_app({"auth": AUTH}, user={"is_logged_in": False}))
    assert _plain(at.title) == ["servescope"]
    assert "access-login-default" in _keys(at)
    assert "run_start" not in _keys(at)
    # Here st.login cannot go on (no Authlib, or no [auth] in a secrets.toml Streamlit
    # itself reads): one line on the page, not a traceback.
    at.button(key="access-login-default").click()
    at = _ok(at)
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert "run_start" not in _keys(at)


def test_login_operators_list_decides_the_role(db):
    secrets = {"auth": AUTH, "servescope": {"operators": ["Alice@Team.example"]}}
    alice = _ok(_app(secrets, user={"is_logged_in": True, "email": "alice@team.example"}))
    assert "run_start" in _keys(alice)
    assert any("alice@team.example · operator" in c for c in _plain(alice.sidebar.caption))
    bob = _ok(_app(secrets, user={"is_logged_in": True, "email": "bob@team.example"}))
    assert "run_start" not in _keys(bob)
    assert any("bob@team.example · viewer" in c for c in _plain(bob.sidebar.caption))


def test_login_viewers_list_refuses_everyone_else(db):
    _migrated(str(db))
    secrets = {
        "auth": AUTH,
        "servescope": {"operators": ["alice@team.example"], "viewers": ["@team.example"]},
    }
    eve = _ok(_app(secrets, user={"is_logged_in": True, "email": "eve@elsewhere.example"}))
    assert len(eve.error) == 1 and "eve@elsewhere.example may not use" in _plain(eve.error)[0]
    assert "Run a benchmark" not in _everything(eve)
    carol = _ok(_app(secrets, user={"is_logged_in": True, "email": "carol@team.example"}))
    assert "Run a benchmark" in _plain(carol.title) and "run_start" not in _keys(carol)


def test_named_providers_get_a_button_each(db):
    auth = {
        "redirect_uri": AUTH["redirect_uri"],
        "cookie_secret": "x",
        "google": {"client_id": "a", "client_secret": "b", "server_metadata_url": "https://g"},
        "okta": {"client_id": "c", "client_secret": "d", "server_metadata_url": "https://o"},
    }
    at = _ok(_app({"auth": auth}, user={"is_logged_in": False}))
    assert {"access-login-google", "access-login-okta"} <= _keys(at)


@pytest.mark.parametrize(
    ("table", "email", "role"),
    [
        ({}, "anyone@x.example", access.OPERATOR),  # no lists: every signed-in user
        ({"operators": ["a@x.example"]}, "a@x.example", access.OPERATOR),
        ({"operators": ["a@x.example"]}, "b@x.example", access.VIEWER),
        ({"operators": ["@x.example"]}, "B@X.example", access.OPERATOR),
        ({"operators": ["@x.example"]}, "b@evilx.example", access.VIEWER),
        ({"viewers": ["@x.example"]}, "b@x.example", access.VIEWER),
        ({"viewers": ["@x.example"]}, "b@y.example", None),
        ({"operators": [], "viewers": []}, "b@x.example", None),
    ],
)
def test_login_role_rules(table, email, role):
    chosen = access.settings({"auth": AUTH, "servescope": table})
    assert chosen.mode == access.LOGIN
    assert access.login_role({"is_logged_in": True, "email": email}, chosen)[0] == role
    assert access.login_role({"is_logged_in": False, "email": email}, chosen) == (None, None)


def test_settings_modes_and_password_rules(passwords):
    assert access.settings(None).mode == access.LOCAL
    assert access.settings({"api_keys": {"K": "v"}}).mode == access.LOCAL
    # [auth] wins over passwords: the OIDC login is the stronger of the two.
    assert access.settings({**passwords, "auth": AUTH}).mode == access.LOGIN
    chosen = access.settings(passwords)
    assert chosen.mode == access.PASSWORD
    assert access.password_role(OPERATOR_PW, chosen) == access.OPERATOR
    assert access.password_role(VIEWER_PW, chosen) == access.VIEWER
    assert access.password_role("", chosen) is None
    assert access.password_role(OPERATOR_PW[:-1], chosen) is None
    only_viewers = access.settings({"servescope": {"viewer_password": VIEWER_PW}})
    assert access.password_role(VIEWER_PW, only_viewers) == access.VIEWER
    assert access.password_role("", only_viewers) is None


def test_the_secrets_example_means_what_it_says(monkeypatch):
    """.streamlit/secrets.toml.example parses, signs in through [auth] with its lists, and
    its [api_keys] table gives an endpoint's key by the variable's name."""
    example = tomllib.loads((ROOT / ".streamlit" / "secrets.toml.example").read_text())
    chosen = access.settings(example)
    assert chosen.mode == access.LOGIN
    assert access.login_role({"is_logged_in": True, "email": "alice@example.com"}, chosen) == (
        access.OPERATOR,
        None,
    )
    assert access.login_role({"is_logged_in": True, "email": "c@example.com"}, chosen)[0] == (
        access.VIEWER
    )
    assert access.login_role({"is_logged_in": True, "email": "c@gmail.com"}, chosen)[0] is None
    monkeypatch.delenv("GPU_BOX_API_KEY", raising=False)  # the environment would win
    box = endpoints.Endpoint("box", "http://127.0.0.1:1", "openai", "GPU_BOX_API_KEY")
    assert endpoints.resolve_api_key(box, example) == example["api_keys"]["GPU_BOX_API_KEY"]


# -- who started a run -----------------------------------------------------------------


def test_a_run_started_by_a_signed_in_operator_records_who(env):
    secrets = {"auth": AUTH, "servescope": {"operators": ["alice@team.example"]}}
    at = _ok(_app(secrets, user={"is_logged_in": True, "email": "alice@team.example"}))
    at.radio(key="prompt_source").set_value("Write prompts").run()
    at.text_area(key="prompt_text").set_value("Say hi.")
    at.number_input(key="run_requests").set_value(1)
    at.number_input(key="run_max_tokens").set_value(4)
    at.number_input(key="run_warmup").set_value(0)
    at.multiselect(key="run_concurrency").set_value([1])
    at.button(key="run_start").click()
    at = _ok(at)
    with store.opened(env) as conn:
        runs = store.list_runs(conn)
    assert [r["started_by"] for r in runs] == ["alice@team.example"]


# -- PostgreSQL: a viewer-only dashboard on a read-only role ---------------------------


@pytest.fixture
def team_db(postgres: PostgresServer, db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """docs/team.md's set-up: an operator role owning the database, a read-only role for a
    viewer-only dashboard (granted before the tables exist: default privileges)."""
    tag = uuid.uuid4().hex[:8]
    op, ro, name = f"op_{tag}", f"ro_{tag}", f"team_{tag}"
    postgres.sql(f"CREATE ROLE {op} LOGIN PASSWORD 'op-pw'")
    postgres.sql(f"CREATE DATABASE {name} OWNER {op}")
    postgres.sql(f"CREATE ROLE {ro} LOGIN PASSWORD 'ro-pw'")
    for grant in (
        f"GRANT CONNECT ON DATABASE {name} TO {ro}",
        f"GRANT USAGE ON SCHEMA public TO {ro}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {op} IN SCHEMA public GRANT SELECT ON TABLES TO {ro}",
    ):
        postgres.sql(grant, name)

    yield SimpleNamespace(
        operator=postgres.url(name, op, "op-pw"), viewer=postgres.url(name, ro, "ro-pw")
    )
    for stmt in (f"DROP DATABASE {name} WITH (FORCE)", f"DROP ROLE {ro}", f"DROP ROLE {op}"):
        postgres.sql(stmt)


def test_a_viewer_dashboard_on_a_read_only_postgres_role(team_db, monkeypatch):
    # Unmigrated, the viewer's dashboard says so in one line and migrates nothing.
    monkeypatch.setenv("SERVESCOPE_DB", team_db.viewer)
    monkeypatch.setenv("SERVESCOPE_ROLE", "viewer")
    at = _ok(_app())
    assert len(at.error) == 1 and "a viewer never migrates it" in at.error[0].value
    assert "ro-pw" not in at.error[0].value
    # The operator's CLI (or dashboard) migrates it and starts a run; the viewer reads it.
    monkeypatch.delenv("SERVESCOPE_ROLE")
    with store.opened(team_db.operator) as conn:
        store.create_run(conn, "team-run", {"lanes": []}, label="by the operator")
    monkeypatch.setenv("SERVESCOPE_ROLE", "viewer")
    at = _ok(_app())
    assert not at.error
    assert "run_start" not in _keys(at)
    with store.opened() as conn:
        assert store.get_run(conn, "team-run")["label"] == "by the operator"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            store.update_run(conn, "team-run", label="changed by a viewer")
    # The role itself may not write either, read-only session or not.
    with (
        store.opened(team_db.viewer, read_only=False) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        store.update_run(conn, "team-run", label="changed by a viewer")


def test_a_password_viewer_on_postgres_neither_migrates_nor_writes(postgres_db, db, monkeypatch):
    monkeypatch.setenv("SERVESCOPE_DB", postgres_db)
    secrets = {"servescope": {"password": OPERATOR_PW, "viewer_password": VIEWER_PW}}
    at = _sign_in(_ok(_app(secrets)), VIEWER_PW)
    assert len(at.error) == 1 and "a viewer never migrates it" in at.error[0].value
    with psycopg.connect(postgres_db) as raw:
        assert raw.execute("SELECT to_regclass('servescope_schema')").fetchone()[0] is None
    # The operator's session on the same dashboard migrates it.
    at = _sign_in(_ok(_app(secrets)), OPERATOR_PW)
    assert not at.error and "run_start" in _keys(at)
    with psycopg.connect(postgres_db) as raw:
        assert raw.execute("SELECT to_regclass('servescope_schema')").fetchone()[0] is not None
    st.cache_data.clear()


def test_a_viewer_neither_relabels_deletes_nor_cancels(db, passwords):
    """History's relabel and delete, and the live view's cancel (drawn in a fragment,
    whose ticks do not run app.py), are an operator's only; a viewer's page does not
    even reconcile a run it cannot judge."""
    make_run(db, run_id="done")
    make_run(db, run_id="going", status="running")  # no process: an operator would fail it
    operator = _page(_sign_in(_ok(_app(passwords)), OPERATOR_PW), "app_pages/history.py")
    viewer = _page(_sign_in(_ok(_app(passwords)), VIEWER_PW), "app_pages/history.py")
    for at in (operator, viewer):
        at.multiselect(key="history_pick").set_value(["done"])
        _ok(at)
    assert "Delete run" in [b.label for b in operator.button]
    assert "Save label" in [b.label for b in operator.button]
    assert "Delete run" not in [b.label for b in viewer.button]
    assert "Save label" not in [b.label for b in viewer.button]

    viewer = _sign_in(_ok(_app(passwords)), VIEWER_PW)
    viewer.query_params["run"] = "going"
    viewer = _ok(viewer)
    assert not any(k.startswith("run-cancel-") for k in _keys(viewer))
    with store.opened(db) as conn:
        assert store.get_run(conn, "going")["status"] == "running"
