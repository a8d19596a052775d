"""A stand-in for the `ollama` executable: `ollama serve` starts the scripted Ollama server.

No Ollama can be installed here, so the recipe for Ollama (lib/launch) is tested with this
program in its place: it reads what `ollama serve` reads (OLLAMA_HOST, OLLAMA_NUM_PARALLEL)
and serves the scripted server (tests/scripted/ollama_server.py, whose wire format follows
recordings of a real Ollama 0.24.0). ``write_executable`` puts an executable file named
``ollama`` that runs it into a folder.

STANDIN_FAULT makes it misbehave the way a broken engine does:
  exit         print an error line and exit 1 at once;
  hang         never listen (a start-up that never finishes);
  stubborn     start a child that ignores SIGTERM, then serve (stop must kill it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAULT_VAR = "STANDIN_FAULT"


def write_executable(folder: Path) -> Path:
    """An executable file ``folder/ollama`` that runs this stand-in with this Python."""
    path = folder / "ollama"
    path.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "runpy.run_module('tests.scripted.ollama_standin', run_name='__main__')\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


def _stubborn_child() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


def main() -> None:
    if sys.argv[1:2] == ["--stubborn-child"]:
        _stubborn_child()
    if sys.argv[1:] != ["serve"]:
        print("Error: the stand-in only knows `ollama serve`", file=sys.stderr)
        sys.exit(2)
    fault = os.environ.get(FAULT_VAR, "")
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    print(f'time=0 level=INFO source=routes.go msg="server config" OLLAMA_HOST={host}:{port}')
    if fault == "exit":
        print(f"Error: listen tcp {host}:{port}: bind: address already in use", flush=True)
        sys.exit(1)
    if fault == "hang":
        while True:
            time.sleep(1)
    if fault == "stubborn":
        subprocess.Popen([sys.executable, __file__, "--stubborn-child"])

    from tests.scripted.ollama_server import OllamaScript, OllamaServer

    parallel = os.environ.get("OLLAMA_NUM_PARALLEL")
    script = OllamaScript(num_parallel=int(parallel) if parallel else None, ttft_ms=30, gap_ms=5)
    server = OllamaServer(script, host=host, port=int(port))
    server.record_paths = set()
    print(f'time=0 level=INFO source=routes.go msg="Listening on {host}:{port} (version 0.24.0)"')
    sys.stdout.flush()
    asyncio.run(server.serve_forever())


if __name__ == "__main__":
    main()
