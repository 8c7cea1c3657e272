"""Enumerations shared by both twins (one definition, so values compare equal across them)."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["BreakerState", "OVERFLOW_POLICIES", "Priority"]


class Priority(IntEnum):
    """Queue priority: lower value is served first."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


class BreakerState(IntEnum):
    """Circuit-breaker state."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


#: Overflow policies of a bounded :class:`~ipfs_accelerate_api.core.PriorityQueue`.
OVERFLOW_POLICIES = ("block", "reject", "drop_lowest")
