"""``ipfs-accel chat`` (one reply, streamed to stdout as it arrives) and ``ipfs-accel models``
(the service's model ids, one a line)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from . import EXIT, add_backend_options, backend_from_args

__all__ = ["add", "run", "run_models"]


def add(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "chat", help="send one prompt and stream the reply to the terminal",
        description="Send PROMPT (- reads it from stdin) to the service and print the reply "
                    "to stdout as it arrives. Usage and finish reason go to stderr with "
                    "--verbose. Ctrl-C stops it (exit 130).")
    p.add_argument("prompt", nargs="+", metavar="PROMPT",
                   help="the prompt (several words are joined with spaces); - reads stdin")
    add_backend_options(p)
    p.add_argument("--system", metavar="TEXT", help="a system message before the prompt")
    p.add_argument("--max-tokens", type=int, metavar="N", help="the reply's length at most")
    p.add_argument("--temperature", type=float, metavar="T")
    p.add_argument("--no-stream", action="store_true",
                   help="wait for the whole reply instead of streaming it")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="the finish reason, token usage, model and time on stderr")
    p.set_defaults(func=run)

    m = sub.add_parser("models", help="list the models a service offers, one id a line",
                       description="List the model ids the service offers, one a line.")
    add_backend_options(m)
    m.add_argument("--json", action="store_true", help="print a JSON list")
    m.set_defaults(func=run_models)


def _prompt(words: list[str]) -> str:
    if words == ["-"]:
        text = sys.stdin.read()
        if not text.strip():
            raise ValueError("the prompt read from stdin is empty")
        return text
    return " ".join(words)


def _messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": args.system}] if args.system else []
    return messages + [{"role": "user", "content": _prompt(args.prompt)}]


def _model_missing(exc: ValueError, args: argparse.Namespace) -> int:
    if not str(exc).startswith("model is required"):
        raise exc
    print(f"ipfs-accel {args.command}: error: {args.backend} needs --model "
          f"(`ipfs-accel models --backend {args.backend}` lists them)", file=sys.stderr)
    return EXIT["usage"]


def _report(args: argparse.Namespace, finish: str | None, usage: Any, model: str | None,
            seconds: float) -> None:
    if not args.verbose:
        return
    parts = [f"finish reason: {finish or 'unknown'}"]
    if usage is not None:
        parts.append(f"tokens: {usage.prompt_tokens} prompt, {usage.completion_tokens} "
                     f"completion, {usage.total_tokens} total")
    if model:
        parts.append(f"model: {model}")
    parts.append(f"{seconds:.2f}s")
    print("; ".join(parts), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..errors import UnsupportedOperation

    messages = _messages(args)
    params = {k: v for k, v in (("max_tokens", args.max_tokens),
                                ("temperature", args.temperature)) if v is not None}
    out = sys.stdout
    ai = backend_from_args(args)
    t0 = time.monotonic()
    try:
        if not args.no_stream:
            try:
                chunks = ai.stream_chat(messages, model=args.model, **params)
            except UnsupportedOperation:
                chunks = None  # a service without streaming: one whole reply below
            except ValueError as exc:
                return _model_missing(exc, args)
            if chunks is not None:
                return _stream(args, chunks, t0)
        try:
            reply = ai.chat(messages, model=args.model, **params)
        except ValueError as exc:
            return _model_missing(exc, args)
        out.write(reply.text)
        if not reply.text.endswith("\n"):
            out.write("\n")
        out.flush()
        _report(args, reply.finish_reason, reply.usage, reply.model, time.monotonic() - t0)
        return EXIT["ok"]
    finally:
        ai.close()


def _stream(args: argparse.Namespace, chunks: Any, t0: float) -> int:
    out = sys.stdout
    finish = usage = None
    last = "\n"
    try:
        for chunk in chunks:
            if chunk.text:
                out.write(chunk.text)
                out.flush()
                last = chunk.text[-1]
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
    except BaseException:
        if last != "\n":  # leave the terminal on a fresh line, then report as usual
            out.write("\n")
            out.flush()
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:  # frees the connection when the loop stopped early
            close()
    if last != "\n":
        out.write("\n")
        out.flush()
    _report(args, finish, usage, args.model, time.monotonic() - t0)
    return EXIT["ok"]


def run_models(args: argparse.Namespace) -> int:
    ai = backend_from_args(args)
    try:
        models = ai.list_models()
    finally:
        ai.close()
    if args.json:
        print(json.dumps(models))
    else:
        for model in models:
            print(model)
    return EXIT["ok"]
