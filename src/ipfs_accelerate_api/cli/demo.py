"""``ipfs-accel demo``: the main job on the embedded emulator, with nothing configured and
no network (:func:`ipfs_accelerate_api.demo.run_demo`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from . import EXIT


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="the main job on the bundled emulator: no key, no network",
        description="Start the emulator of every service in this process (realistic limits, "
                    "a few percent of injected faults), embed the bundled corpus of 20,000 "
                    "texts through TEI, send chat requests at mixed priorities to OpenAI, "
                    "Claude, Gemini, Groq and Ollama (one reply streamed live), survive a "
                    "scripted outage (the breaker opens, calls fail fast, it recovers), "
                    "search what was embedded, and print a table per backend. Exits 1 if "
                    "any request was lost. No key or URL from the environment is used.")
    p.add_argument("--quick", action="store_true",
                   help="the same in a few seconds (1,000 rows, fewer chats)")
    p.add_argument("--keep", metavar="DIR",
                   help="write the corpus, its vectors (corpus.npy) and sidecar here and keep "
                        "them (default: a temporary directory, removed)")
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from .embed import _Bar

    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:  # the corpus has accents and emoji; never fail on a terminal
        reconfigure(errors="replace")
    progress: Callable[[int], Any] | None = None
    if args.progress or sys.stderr.isatty():
        progress = _Bar
    result = run_demo(quick=args.quick, keep=args.keep, progress=progress)
    return EXIT["ok"] if result.ok else EXIT["failed"]
