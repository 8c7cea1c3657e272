"""ipfs-accelerate-api: one client for many AI services, with a compiled core.

    import ipfs_accelerate_api as ia
    with ia.backend("openai", api_key="sk-...") as ai:
        print(ai.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini").text)

Import is cheap and has no side effects: no threads, no logging configuration, no files.
Heavy modules (numpy, the engine, backends) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AcceleratorError",
    "BreakerPolicy",
    "Priority",
    "RetryPolicy",
    "Router",
    "Timeouts",
    "__version__",
    "backend",
    "core",
    "errors",
]

from . import errors
from ._enums import Priority
from .config import BreakerPolicy, RetryPolicy, Timeouts
from .errors import AcceleratorError

if TYPE_CHECKING:
    from . import core
    from .backends import backend
    from .router import Router


def __getattr__(name: str) -> Any:
    if name == "core":
        return importlib.import_module(".core", __name__)
    if name == "backend":
        return importlib.import_module(".backends", __name__).backend
    if name == "Router":
        return importlib.import_module(".router", __name__).Router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
