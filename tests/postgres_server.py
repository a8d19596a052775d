"""A real PostgreSQL server for the tests and benchmarks: Debian's `postgresql` binaries,
a fresh cluster in a temporary folder on a free loopback port, password logins only,
stopped and removed afterwards.

PostgreSQL refuses to run as root: as root (CI), the cluster belongs to the `postgres`
user the Debian package creates, and its commands run through `runuser`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "servescope_admin"


def binaries() -> Path:
    """The folder holding initdb and pg_ctl (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "PostgreSQL's server is not installed: `make test` installs Debian's postgresql "
        "(or: apt-get install postgresql)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """`with PostgresServer() as pg: url = pg.create_database("x")`."""

    def __init__(self, durable: bool = False) -> None:
        # durable=False turns fsync off: the tests need the server's behaviour, not its
        # crash safety; the benchmark keeps the defaults.
        self.durable = durable
        self.password = "pw-" + secrets.token_hex(8)
        self.port = 0
        self.folder = Path(tempfile.mkdtemp(prefix="servescope-pg-"))
        self.data = self.folder / "data"
        self._bin = binaries()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        cmd = [str(self._bin / argv[0]), *argv[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()}")

    def start(self) -> PostgresServer:
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self._as_postgres:
            shutil.chown(self.folder, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        )
        pwfile.unlink()
        settings = [
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.folder}",
            "-c max_connections=200",
        ]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        for attempt in range(5):
            self.port = free_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-o",
                    " ".join([f"-p {self.port}", *settings]),
                    "-l",
                    str(self.folder / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                return self
            except RuntimeError:
                if attempt == 4:  # the port was taken between finding and binding it
                    raise
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # never started, or already gone
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str = "") -> str:
        secret = quote(password or self.password, safe="")
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        """Run one statement as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL (the superuser's, password included)."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
