"""ipfs-accelerate-api: one client for many AI services, with a compiled core.

Import is cheap and has no side effects: no threads, no logging configuration, no files.
Heavy modules (numpy, the engine, backends) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AcceleratorError",
    "Priority",
    "__version__",
    "core",
    "errors",
]

from . import errors
from ._enums import Priority
from .errors import AcceleratorError

if TYPE_CHECKING:
    from . import core


def __getattr__(name: str) -> Any:
    if name == "core":
        import importlib

        return importlib.import_module(".core", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
