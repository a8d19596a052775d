"""Registers the sandbox's GGUF model variants in a local Ollama server.

Why: on a user's machine with Ollama installed, comparing Ollama with vLLM and
llama.cpp is only fair when all three answer from the same weights. The sandbox
already has those weights as GGUF files (the ones llama.cpp serves), so each one is
imported into that Ollama server as ``<alias>:sandbox`` instead of pulling Ollama's own
build of a similar model.

What: for each served alias, upload the GGUF as a blob (``POST /api/blobs/sha256:…``,
skipped when ``HEAD`` says the server already has it) and create the model from it
(``POST /api/create`` with ``files``, the ChatML template and its stop words) through
the official ``ollama`` client. The ``ollama`` executable on the PATH only signals that
a local Ollama exists; nothing here runs it or any other process, and no input reaches
a shell. Every failure becomes one ``SandboxError`` line naming the model.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
from ollama import Client, ResponseError

from sandbox.errors import SandboxError

Report = Callable[[str, str], None]

TAG = "sandbox"

# Ollama's own ChatML template (template/chatml.gotmpl). Ollama keeps system messages
# in .Messages (and also joins them into .System), so ranging over .Messages alone
# renders the system turn exactly once; a template that printed .System as well would
# repeat it. Ends with the generation prompt "<|im_start|>assistant\n".
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
# Qwen2.5's turn markers: without them as stop words Ollama would let the model run on
# into a made-up next turn, while vLLM and llama.cpp stop at the GGUF's end-of-turn token.
STOP = ["<|im_start|>", "<|im_end|>"]

# Ollama's model-name part: a letter or digit, then letters, digits, "_", "-" or ".",
# at most 80 characters (types/model/name.go). Checked here so a bad alias fails with a
# clear line before anything is uploaded.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
_CHUNK = 1 << 20


def ollama_on_path() -> str | None:
    """The path of the ``ollama`` executable on the PATH, or None when there is none."""
    return shutil.which("ollama")


def register(
    ggufs: dict[str, Path],
    base_url: str,
    report: Report,
    timeout_s: float = 600,
) -> list[str]:
    """Create ``<alias>:sandbox`` in the Ollama server at ``base_url`` for each GGUF.

    ``ggufs`` maps each served alias to its GGUF file; ``base_url`` is the server's root
    (e.g. ``http://127.0.0.1:11434``); ``timeout_s`` bounds each network step (connect,
    each read and write), not the whole upload. Re-running is cheap: a blob the server
    already holds is not uploaded again, and creating an existing tag replaces it with
    the same content. Returns the tags registered, in the order of ``ggufs``; raises
    ``SandboxError`` on the first model that fails.
    """
    root = base_url.rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise SandboxError(f"ollama: the server URL must start with http:// or https://: {root!r}")
    tags: list[str] = []
    # A plain HTTP client for the blob HEAD check (ollama-python 0.6 has no call for it),
    # the official client for the upload and the create.
    with (
        httpx.Client(base_url=root, timeout=timeout_s) as http,
        Client(root, timeout=timeout_s) as api,
    ):
        for alias, given in ggufs.items():
            path, tag = Path(given), f"{alias}:{TAG}"
            if not _NAME.fullmatch(alias):
                raise SandboxError(
                    f"ollama: cannot register {alias!r}: not a valid Ollama model name "
                    "(letters, digits, '_', '-' and '.', at most 80)"
                )
            try:
                _register_one(http, api, tag, path, report)
            except (ResponseError, httpx.HTTPError, OSError) as exc:
                reason = _reason(exc, root)
                raise SandboxError(
                    f"ollama: could not register {tag} from {path.name}: {reason}"
                ) from None
            tags.append(tag)
            report("models", f"ollama: registered {tag}")
    return tags


def _register_one(http: httpx.Client, api: Client, tag: str, path: Path, report: Report) -> None:
    digest = _sha256(path)
    if _has_blob(http, digest):
        report("models", f"ollama: {path.name} is already on the server")
    else:
        size_mib = path.stat().st_size / 2**20
        report("models", f"ollama: uploading {path.name} ({size_mib:.0f} MiB)")
        # create_blob hashes the file again before uploading it; the second pass is
        # cheap next to the upload and keeps the upload in the official client.
        uploaded = api.create_blob(path)
        if uploaded != digest:
            raise SandboxError(f"ollama: {path.name} changed while {tag} was being registered")
    done = api.create(
        model=tag,
        files={path.name: digest},
        template=CHATML_TEMPLATE,
        parameters={"stop": STOP},
        stream=False,
    )
    if done.status != "success":
        raise SandboxError(f"ollama: creating {tag} ended with status {done.status!r}")


def _has_blob(http: httpx.Client, digest: str) -> bool:
    """Whether the server holds the blob: 200 yes, 404 no, anything else is an error."""
    r = http.head(f"/api/blobs/{digest}")
    if r.status_code == 404:
        return False
    r.raise_for_status()
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _reason(exc: BaseException, root: str) -> str:
    """One line saying why, without traceback text or the server's line breaks."""
    if isinstance(exc, httpx.ConnectError | ConnectionError):
        # The ollama client turns a refused connection into a long ConnectionError
        # that points at the download page; say which server instead.
        text = f"cannot reach the Ollama server at {root}"
    elif isinstance(exc, httpx.TimeoutException):
        text = f"the Ollama server at {root} timed out ({type(exc).__name__})"
    elif isinstance(exc, httpx.HTTPStatusError):
        text = f"HTTP {exc.response.status_code} from {exc.request.url.path}"
    elif isinstance(exc, ResponseError):
        text = f"{exc.error} (HTTP {exc.status_code})"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
