"""The ``ipfs-accel`` command: one subcommand per module of this package, each a thin layer
over the library.

Errors are one line on stderr (``--debug`` shows the traceback); exit codes: 0 done, 1
failed, 2 usage error, 3 configuration error (no key, bad URL), 4 service unavailable after
the retries, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any, Sequence

__all__ = ["EXIT", "add_backend_options", "backend_from_args", "main"]

EXIT = {"ok": 0, "failed": 1, "usage": 2, "config": 3, "unavailable": 4, "interrupted": 130,
        "broken_pipe": 141}  # 141 = 128 + SIGPIPE, what a shell reports for `cmd | head`


def add_backend_options(p: argparse.ArgumentParser, *, model_required: bool = False,
                        backend_required: bool = True) -> None:
    """The options every command that talks to a service takes."""
    from ..backends import BACKENDS

    p.add_argument("--backend", required=backend_required, metavar="NAME",
                   help=f"the service: {', '.join(sorted(BACKENDS))}"
                        + ("" if backend_required else " (default: the one that made the file)"))
    p.add_argument("--model", required=model_required, help="the model to use")
    p.add_argument("--base-url", help="the service's URL (default: its usual local one, or "
                                      "its *_API_URL / *_BASE_URL environment variable)")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="requests in flight at most")
    p.add_argument("--rpm", type=float, default=None, help="requests per minute per key")
    p.add_argument("--tpm", type=float, default=None, help="tokens per minute per key")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend's options from the command line (None where not given)."""
    out: dict[str, Any] = {}
    if getattr(args, "base_url", None):
        out["base_url"] = args.base_url
    if getattr(args, "concurrency", None) is not None:
        out["max_concurrency"] = args.concurrency
    for name in ("rpm", "tpm"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    return out


def backend_from_args(args: argparse.Namespace, **extra: Any) -> Any:
    from ..backends import backend

    return backend(args.backend, **{**backend_options(args), **extra})


def _exit_code(exc: BaseException) -> int:
    from ..errors import (
        APIConnectionError,
        AuthenticationError,
        CircuitOpenError,
        ConfigurationError,
        InputError,
        PermissionDeniedError,
        ResumeConflict,
        ServerError,
    )

    if isinstance(exc, KeyboardInterrupt):
        return EXIT["interrupted"]
    if isinstance(exc, (ConfigurationError, AuthenticationError, PermissionDeniedError)):
        return EXIT["config"]
    if isinstance(exc, (APIConnectionError, ServerError, CircuitOpenError)):
        return EXIT["unavailable"]
    if isinstance(exc, (ResumeConflict, InputError)):
        return EXIT["failed"]
    return EXIT["failed"]


def _parser() -> argparse.ArgumentParser:
    from . import bench, chat, demo, embed, emulate, keys, search

    parser = argparse.ArgumentParser(prog="ipfs-accel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, embed, search, chat, keys, emulate, bench):
        module.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here, argparse's own way
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so a reader that left is met below, not at exit
        return code
    except KeyboardInterrupt:
        print("ipfs-accel: interrupted", file=sys.stderr)
        return EXIT["interrupted"]
    except BrokenPipeError:  # `ipfs-accel ... | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return EXIT["broken_pipe"]
    except Exception as exc:  # one line, unless --debug
        if args.debug:
            traceback.print_exc()
        else:
            print(f"ipfs-accel {args.command}: error: {exc}", file=sys.stderr)
        return _exit_code(exc)
