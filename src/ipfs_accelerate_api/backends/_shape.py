"""Typed readers for the fields of a service's answer.

Each returns the value with the type the adapter needs, or raises
:class:`~ipfs_accelerate_api.errors.ResponseFormatError` naming the field, so that a malformed
answer becomes a typed error and never wrong data (an ``Infinity`` token count, a number where
text belongs, a vector of the wrong length). ``where`` is the field's path, for the message.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ResponseFormatError

__all__ = ["as_count", "as_dict", "as_list", "as_str", "field", "id_list"]


def _bad(where: str, expected: str, value: Any) -> ResponseFormatError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:80] + "..."
    return ResponseFormatError(f"{where} should be {expected}, got {shown}")


def as_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "an object", value)
    return value


def as_list(value: Any, where: str, *, nonempty: bool = False) -> list[Any]:
    if not isinstance(value, list) or (nonempty and not value):
        raise _bad(where, "a non-empty list" if nonempty else "a list", value)
    return value


def as_str(value: Any, where: str, *, optional: bool = False) -> Any:
    """A string (or None when ``optional``)."""
    if isinstance(value, str) or (optional and value is None):
        return value
    raise _bad(where, "a string" + (" or null" if optional else ""), value)


def as_count(value: Any, where: str) -> int:
    """A token count: a finite non-negative integer (a missing or null count is 0)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    raise _bad(where, "a non-negative integer", value)


def field(obj: dict[str, Any], key: str, where: str) -> Any:
    """``obj[key]``, or a format error naming the missing field."""
    try:
        return obj[key]
    except KeyError:
        raise ResponseFormatError(f"{where}.{key} is missing") from None


def id_list(body: Any, list_key: str = "data", id_key: str = "id") -> list[str]:
    """``[item[id_key] for item in body[list_key]]``, each checked (a model listing)."""
    items = as_list(field(as_dict(body, "response"), list_key, "response"), list_key)
    return [as_str(field(as_dict(m, f"{list_key}[{i}]"), id_key, f"{list_key}[{i}]"),
                   f"{list_key}[{i}].{id_key}") for i, m in enumerate(items)]
