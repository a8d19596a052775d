"""A background thread that writes a run's records to the store as they arrive.

The runner's event loop times hundreds of streams; a commit on it would delay the
timestamps of every other stream. Records go into a queue instead and this thread
commits each batch at once (within milliseconds), on its own connection.

A server database can go away for a moment (a restart, a dropped link): a batch
whose connection was lost is written again, whole, on a new connection (it is one
transaction, so nothing of it was kept), for up to RECONNECT_FOR_S seconds, so a
short outage costs no measurement.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from lib import store
from lib.store.postgres_backend import is_lost_connection

_STOP = object()
RECONNECT_FOR_S = 60.0


class StoreWriter:
    """Serialises writes to one database from one thread."""

    def __init__(self, db: str | os.PathLike[str] | None = None) -> None:
        """StoreError at once for a viewer (a read-only process or block): its writes
        would all be refused, after the run had already sent its requests."""
        if store.reading_only():
            raise store.StoreError(
                f"cannot write to the store {store.describe(db)}: a viewer's is read-only"
            )
        self._db = db
        self._queue: queue.Queue[Any] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[..., None], *args: Any) -> None:
        """Queue `op(conn, *args)`; ops run in order, each batch in one transaction."""
        if self._error is not None:
            raise RuntimeError(f"store writer failed: {self._error}") from self._error
        self._queue.put((op, args))

    def add_request(self, row: dict[str, Any]) -> None:
        self.submit(store.add_requests, [row])

    def close(self) -> None:
        """Write everything queued, then stop. Raises if any write failed."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"store writer failed: {self._error}") from self._error

    def _loop(self) -> None:
        try:
            conn = store.connect(self._db)
        except BaseException as exc:  # report through submit()/close(), not a dead thread
            self._error = exc
            return
        try:
            stop = False
            while not stop:
                batch = [self._queue.get()]
                # Take whatever else is already waiting: one commit for a burst.
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                ops = [item for item in batch if item is not _STOP]
                stop = len(ops) != len(batch)
                if ops and self._error is None:
                    conn = self._write(conn, merged(ops))
        finally:
            conn.close()

    def _write(self, conn: Any, ops: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> Any:
        """Commit the batch; returns the connection to go on with (a new one after the
        server was lost and came back)."""
        deadline = time.monotonic() + RECONNECT_FOR_S
        while True:
            try:
                with conn.transaction():
                    for op, args in ops:
                        op(conn, *args)
                return conn
            except BaseException as exc:  # keep the thread alive to report, never hang close()
                if is_lost_connection(exc) and time.monotonic() < deadline:
                    conn = self._reconnect(conn, deadline)
                    if conn is not None:
                        continue
                self._error = exc
                print(f"servescope: writing to the store failed: {one_line(exc)}", file=sys.stderr)
                return conn if conn is not None else _Closed()

    def _reconnect(self, old: Any, deadline: float) -> Any:
        old.close()
        while time.monotonic() < deadline:
            try:
                return store.connect(self._db)
            except store.StoreError:
                time.sleep(1.0)
        return None


def merged(
    ops: list[tuple[Callable[..., None], tuple[Any, ...]]],
) -> list[tuple[Callable[..., None], tuple[Any, ...]]]:
    """The batch with each run of consecutive request inserts made one insert: a row at a
    time costs a round trip each to a database server (a PostgreSQL 2.6 ms away took
    ~290 rows/s that way, ~3,900 merged; BENCHMARKS.md). Order is kept otherwise."""
    out: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
    for op, args in ops:
        if op is store.add_requests and out and out[-1][0] is store.add_requests:
            out[-1] = (op, ([*out[-1][1][0], *args[0]],))
        else:
            out.append((op, args))
    return out


class _Closed:
    """Stands for a connection that could not be opened again (close() is all it does)."""

    def close(self) -> None:
        pass


def one_line(exc: BaseException) -> str:
    """An error as one line (a driver's message may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__
