"""The one error type the sandbox commands turn into a clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path


class SandboxError(Exception):
    """A failure the user can act on: bad input, a failed install, an engine that died.

    ``log`` names the file that holds the details; the CLI prints it on the same line.
    """

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.log = log

    def line(self) -> str:
        """One line for the terminal, naming the log file when there is one."""
        if self.log is None:
            return f"sandbox: error: {self.message}"
        return f"sandbox: error: {self.message} (see {self.log})"
