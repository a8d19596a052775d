"""Which programs a recipe may start, and whether the dashboard may start any.

A recipe names its program as one of:

- "" : the engine's usual command (``vllm``, ``llama-server``, ``ollama``) found on the PATH;
- one of those three names, found on the PATH (a bare name only: "/tmp/x/vllm" is a path);
- "sandbox": the sandbox's own install (its venv's Python with the engine's server module);
- a path the operator listed in ``$SERVESCOPE_ENGINE_EXECUTABLES`` (os.pathsep-separated),
  compared after resolving links.

Anything else is refused with one line. Nothing a recipe holds reaches a shell: the
program is started with an argument list, and a module-flavoured Python only ever runs
the engine's own server module.

The dashboard launches engines only when it listens on loopback, or when the operator
sets ``SERVESCOPE_ALLOW_ENGINE_LAUNCH=1`` (its page is then reachable by others, who could
start processes on this machine).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lib.core.recipes import DEFAULT_COMMANDS, SANDBOX, EngineRecipe

ALLOWED_NAMES = frozenset(DEFAULT_COMMANDS.values())
OPERATOR_VAR = "SERVESCOPE_ENGINE_EXECUTABLES"
ALLOW_LAUNCH_VAR = "SERVESCOPE_ALLOW_ENGINE_LAUNCH"
LOOPBACK = frozenset(("127.0.0.1", "localhost", "::1", "[::1]"))


class LaunchRefused(Exception):
    """A recipe this machine will not start; the message is one line."""


@dataclass
class Program:
    """The program to start for a recipe: a binary, or a Python running a module."""

    path: Path
    module: str | None = None  # set for the sandbox's engines (python -m module)
    env: dict[str, str] = field(default_factory=dict)
    drop_env: frozenset[str] = frozenset()
    cwd: Path | None = None
    sandbox: bool = False


def operator_paths(environ: dict[str, str] | None = None) -> list[Path]:
    """The executables the operator allows besides the usual commands."""
    raw = (environ if environ is not None else os.environ).get(OPERATOR_VAR, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def resolve(recipe: EngineRecipe, environ: dict[str, str] | None = None) -> Program:
    """The program ``recipe`` starts; LaunchRefused when it is not allowed or missing."""
    given = recipe.executable or DEFAULT_COMMANDS[recipe.engine]
    if given == SANDBOX:
        return _sandbox_program(recipe.engine)
    if "/" not in given and os.sep not in given:
        if given not in ALLOWED_NAMES:
            raise LaunchRefused(
                f"{given!r} is not an engine command servescope starts "
                f"(allowed: {', '.join(sorted(ALLOWED_NAMES))}, sandbox, or a path in "
                f"${OPERATOR_VAR})"
            )
        found = shutil.which(given, path=(environ or os.environ).get("PATH"))
        if found is None:
            raise LaunchRefused(f"{given!r} is not on the PATH of this machine")
        return Program(Path(found))
    path = Path(given).expanduser().resolve()
    if path not in operator_paths(environ):
        raise LaunchRefused(
            f"{given} is not in ${OPERATOR_VAR}; the operator lists the engine executables "
            "servescope may start"
        )
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise LaunchRefused(f"{given} is not an executable file")
    return Program(path)


def _sandbox_program(engine: str) -> Program:
    try:
        from sandbox.errors import SandboxError
        from sandbox.recipes import program
    except ImportError:
        raise LaunchRefused("the sandbox is not part of this install") from None
    try:
        found = program(engine)
    except SandboxError as exc:
        raise LaunchRefused(exc.message) from None
    return Program(
        found.python, found.module, dict(found.env), found.drop_env, found.cwd, sandbox=True
    )


def dashboard_may_launch(address: str | None, environ: dict[str, str] | None = None) -> bool:
    """True when the dashboard at ``address`` (Streamlit's server.address) may start
    engines: it listens on loopback only, or the operator allowed it."""
    env = environ if environ is not None else os.environ
    if env.get(ALLOW_LAUNCH_VAR, "").strip().lower() in ("1", "true", "yes"):
        return True
    return (address or "").strip() in LOOPBACK
