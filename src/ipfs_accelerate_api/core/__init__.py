"""The C core: the five performance-critical primitives, compiled or pure.

This module is the **only** place that chooses between the compiled twins
(``ipfs_accelerate_api.core._c``, built from ``cython_core/``) and the pure-Python twins
(``ipfs_accelerate_api.core._pure``, the readable spec). Everything else imports from here.

* :data:`IMPLEMENTATION` is ``"c"`` or ``"python"``.
* ``IPFS_ACCEL_NO_EXTENSIONS=1`` in the environment forces the pure twins.
* On interpreters other than CPython, or when the extensions were not built, the pure twins
  are used.
* Type checkers always see the pure twins (same signatures).
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from .._enums import OVERFLOW_POLICIES, BreakerState, Priority

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "IMPLEMENTATION",
    "OVERFLOW_POLICIES",
    "Priority",
    "PriorityQueue",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "RateLimiter",
    "TokenBucket",
    "cosine_similarity",
    "l2_normalize",
    "pack_batches",
    "pack_sorted",
    "parse_floats",
    "top_k",
]

from ..errors import QueueClosed, QueueEmpty, QueueFull

NO_EXTENSIONS_ENV = "IPFS_ACCEL_NO_EXTENSIONS"


def _extensions_wanted() -> bool:
    if os.environ.get(NO_EXTENSIONS_ENV, "").strip() not in ("", "0", "false", "False", "no"):
        return False
    return platform.python_implementation() == "CPython"


IMPLEMENTATION: str = "python"

if TYPE_CHECKING or not _extensions_wanted():
    from ._pure.breaker import CircuitBreaker
    from ._pure.packer import pack_batches, pack_sorted
    from ._pure.pqueue import PriorityQueue
    from ._pure.ratelimit import RateLimiter, TokenBucket
    from ._pure.vecmath import cosine_similarity, l2_normalize, parse_floats, top_k
else:
    try:
        from ._c.breaker import CircuitBreaker
        from ._c.packer import pack_batches, pack_sorted
        from ._c.pqueue import PriorityQueue
        from ._c.ratelimit import RateLimiter, TokenBucket
        from ._c.vecmath import cosine_similarity, l2_normalize, parse_floats, top_k

        IMPLEMENTATION = "c"
    except ImportError:  # not built (a source checkout, or an IPFS_ACCEL_NO_EXTENSIONS build)
        from ._pure.breaker import CircuitBreaker
        from ._pure.packer import pack_batches, pack_sorted
        from ._pure.pqueue import PriorityQueue
        from ._pure.ratelimit import RateLimiter, TokenBucket
        from ._pure.vecmath import cosine_similarity, l2_normalize, parse_floats, top_k
