"""Prices per model and what the usage every backend reports has cost.

A price table maps a model to ``{"input": USD per million prompt tokens, "output": USD per
million completion tokens}``. :func:`load_prices` builds one in three layers, each
replacing what the one before said about a model:

1. the bundled default, ``ipfs_accelerate_api/data/prices.json`` (list prices on the date
   in its ``as_of`` field; providers change them, so treat it as a starting point);
2. a JSON file: the ``path`` given, or else the one named by ``IPFS_ACCEL_PRICES``; either
   the bundled file's shape (``{"models": {...}}``) or a plain ``{model: price}`` mapping;
3. ``overrides``: a ``{model: price}`` mapping (a Router deployment's ``cost=``).

In layers 2 and 3 a price may name one side only (``{"output": 12}`` keeps the input price
before it; a new model's missing side is 0), and ``None`` removes a model (it is then
*unpriced*). :func:`cost_table` turns ``stats()["usage"]`` into dollars.

    prices = load_prices(overrides={"my-llama": {"input": 0, "output": 0}})
    cost = cost_table(backend.stats()["usage"], prices)
    cost["total"], cost["by_model"]["gpt-4o-mini"]["by_key"], cost["unpriced"]
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from .errors import ConfigurationError

__all__ = ["PRICES_ENV", "Price", "cost_table", "load_prices", "price_for", "priced_name"]

#: The environment variable naming a JSON price file (layer 2 when no ``path`` is given).
PRICES_ENV = "IPFS_ACCEL_PRICES"
#: Prices are per this many tokens.
PER_TOKENS = 1_000_000
_SIDES = ("input", "output")
#: A dated model name (``claude-sonnet-4-5-20250929``, ``gpt-4o-mini-2024-07-18``) is priced
#: as its undated name when the table has no entry of its own.
_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")

Price = dict[str, float]


@lru_cache(maxsize=1)
def _bundled() -> tuple[tuple[str, float, float], ...]:
    text = resources.files(__package__).joinpath("data").joinpath("prices.json").read_text("utf-8")
    table = _parse(json.loads(text), "the bundled price table", {})
    return tuple((m, p["input"], p["output"]) for m, p in table.items())


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{where}: a price must be a finite number >= 0 (USD per "
                                 f"million tokens), got {value!r}")
    return float(value)


def _parse(data: Any, source: str, base: dict[str, Price]) -> dict[str, Price]:
    """``base`` with the prices of ``data`` (a file's content or an overrides mapping) laid
    over it."""
    if isinstance(data, Mapping) and isinstance(data.get("models"), Mapping):
        data = data["models"]
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: expected {{model: {{'input': x, 'output': y}}}}, "
                                 f"got {type(data).__name__}")
    out = dict(base)
    for model, price in data.items():
        if not isinstance(model, str) or model.startswith("_"):
            continue  # comments ("_about") and the file's own fields
        if price is None:
            out.pop(model, None)
            continue
        if not isinstance(price, Mapping) or not price or set(price) - set(_SIDES):
            raise ConfigurationError(f"{source}: the price of {model!r} must be a mapping with "
                                     f"'input' and/or 'output', got {price!r}")
        old = out.get(model, {"input": 0.0, "output": 0.0})
        out[model] = {side: _number(price[side], f"{source}: {model!r} {side}")
                      if side in price else old[side] for side in _SIDES}
    return out


def load_prices(path: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> dict[str, Price]:
    """The price table: the bundled default, then the JSON file at ``path`` (or named by
    ``IPFS_ACCEL_PRICES``), then ``overrides``. Raises :class:`ConfigurationError` for a
    file that cannot be read or parsed and for a price that is not a number >= 0."""
    table: dict[str, Price] = {m: {"input": i, "output": o} for m, i, o in _bundled()}
    file = path if path is not None else (os.environ.get(PRICES_ENV) or None)
    if file is not None:
        where = f"price file {os.fspath(file)!r}" + ("" if path is not None else f" ({PRICES_ENV})")
        try:
            with open(file, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{where}: {exc}") from exc
        table = _parse(data, where, table)
    if overrides:
        table = _parse(overrides, "price overrides", table)
    return table


def priced_name(model: str, prices: Mapping[str, Price]) -> str | None:
    """The table entry that prices ``model``: its own, else its undated name's; None: none."""
    if model in prices:
        return model
    undated = _DATE_SUFFIX.sub("", model)
    return undated if undated != model and undated in prices else None


def price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of ``model``: its own entry, else its undated name's; None: unpriced."""
    name = priced_name(model, prices)
    return None if name is None else prices[name]


def cost_table(usage: Mapping[str, Mapping[str, Mapping[str, Any]]],
               prices: Mapping[str, Price]) -> dict[str, Any]:
    """What ``usage`` (``stats()["usage"]``: ``{model: {key label: {prompt_tokens,
    completion_tokens, ...}}}``) cost in USD at ``prices``:
    ``{"total": x, "by_model": {model: {"total": x, "by_key": {key: x}}}, "unpriced": [...]}``.

    A model without a price is left out of the totals and listed in ``unpriced`` (sorted),
    unless it used no tokens (then it cost nothing whatever its price)."""
    total = 0.0
    by_model: dict[str, Any] = {}
    unpriced = []
    for model, keys in usage.items():
        price = price_for(model, prices)
        if price is None:
            if any(row.get("prompt_tokens", 0) or row.get("completion_tokens", 0)
                   for row in keys.values()):
                unpriced.append(model)
            continue
        by_key = {key: (row.get("prompt_tokens", 0) * price["input"]
                        + row.get("completion_tokens", 0) * price["output"]) / PER_TOKENS
                  for key, row in keys.items()}
        subtotal = sum(by_key.values())
        by_model[model] = {"total": subtotal, "by_key": by_key}
        total += subtotal
    return {"total": total, "by_model": by_model, "unpriced": sorted(unpriced)}
