"""A background thread that writes a run's records to SQLite as they arrive.

The runner's event loop times hundreds of streams; a commit on it would delay the
timestamps of every other stream. Records go into a queue instead and this thread
commits each batch at once (within milliseconds), on its own connection.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

from lib import store

_STOP = object()


class StoreWriter:
    """Serialises writes to one database from one thread."""

    def __init__(self, db: str | os.PathLike[str] | None = None) -> None:
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
                    self._write(conn, ops)
        finally:
            conn.close()

    def _write(self, conn: Any, ops: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, args in ops:
                op(conn, *args)
            conn.execute("COMMIT")
        except BaseException as exc:  # keep the thread alive to report, never hang close()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._error = exc
            print(f"servescope: writing to the store failed: {exc}", file=sys.stderr)
