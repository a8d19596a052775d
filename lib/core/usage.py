"""Bad command-line input as one line: the shape both command lines share.

`python -m lib.cli` and `python -m sandbox` print ``<prog>: error: <what> (see <usage>
--help)`` on stderr and exit 2, never argparse's usage dump.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(Exception):
    """Bad input: printed as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def error_line(name: str, message: object) -> str:
    """``name: error: message`` flattened to one line (messages may quote engine text)."""
    flat = " ".join(str(message).split())
    return f"{name}: error: {flat[:500]}"
