"""``ipfs-accel keys``: the keys each backend would use, masked, and where each came from.

A key is never printed whole: at most its last four characters (and, for a key of twenty
characters or more, a vendor prefix such as ``sk-``), and nothing but ``****`` for a key
shorter than twelve characters.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
from typing import Any

from ..config import resolve_credentials

__all__ = ["add", "backend_class", "mask", "run"]

#: Keys shorter than this show nothing but ``****``.
MASK_MIN_LENGTH = 12
#: Keys this long or longer show their vendor prefix too.
MASK_PREFIX_LENGTH = 20
#: A vendor prefix shown before the mask (``sk-``, ``gsk_``, ``hf_``): letters, then - or _.
_PREFIX = re.compile(r"^[A-Za-z]{1,4}[-_]")


def backend_class(name: str) -> type:
    """The class behind a backend name (aliases too), without creating a backend."""
    from ..backends import BACKENDS, backend

    if name not in BACKENDS:
        backend(name)  # raises the registry's own ConfigurationError naming the choices
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def mask(key: str) -> str:
    """``sk-…wxyz``: a vendor prefix and the last four characters; ``****`` if short."""
    if len(key) < MASK_MIN_LENGTH:
        return "****"
    prefix = _PREFIX.match(key) if len(key) >= MASK_PREFIX_LENGTH else None
    return f"{prefix.group(0) if prefix else ''}…{key[-4:]}"


def _prefixes(cls: type) -> tuple[str, ...]:
    p = cls.env_prefix  # type: ignore[attr-defined]
    return (p,) if isinstance(p, str) else tuple(p)


def describe(name: str) -> dict[str, Any]:
    """One backend's configured keys, masked, each with its origin."""
    cls = backend_class(name)
    own = getattr(cls, "configured_keys", None)
    if own is not None:  # a backend with its own credentials chain (S3: access key pairs)
        return {"backend": cls.name, "required": True,  # type: ignore[attr-defined]
                "keys": [{"key": mask(k), "source": o} for k, o in own()],
                "base_url": None, "env": ["AWS_ACCESS_KEY_ID", "S3_ACCESS_KEY"]}
    prefixes = _prefixes(cls)
    creds = resolve_credentials(cls.name, prefixes, required=False)  # type: ignore[attr-defined]
    origins = creds.origins
    return {
        "backend": cls.name,  # type: ignore[attr-defined]
        "required": bool(cls.requires_key),  # type: ignore[attr-defined]
        "keys": [{"key": mask(k.reveal()), "source": o} for k, o in zip(creds.keys, origins)],
        "base_url": creds.base_url,
        "env": [f"{p}_API_KEY" for p in prefixes],
    }


def add(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "keys", help="list the configured API keys per backend, masked, and where each came from",
        description="For each backend (all by default), the API keys it would use, masked "
                    "(a vendor prefix and at most the last 4 characters), and where each came "
                    "from: the environment variable's name or the credentials file's path "
                    "(~/.ipfs_api_credentials, or $IPFS_ACCEL_CREDENTIALS). A credentials file "
                    "readable by group or others is refused (exit 3).")
    p.add_argument("--backend", metavar="NAME", help="only this backend")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backends import BACKENDS

    if args.backend:
        names = [args.backend]
    else:  # one entry per class: aliases ("google", "hf_tei"...) name the same backend
        seen: dict[type, str] = {}
        for name in BACKENDS:
            seen.setdefault(backend_class(name), name)
        names = list(seen.values())
    found = [describe(name) for name in names]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    width = max(len(b["backend"]) for b in found)
    for b in found:
        for k in b["keys"]:
            print(f"{b['backend']:<{width}}  {k['key']:<12}  {k['source']}")
        if not b["keys"]:
            hint = (f"none (set {' or '.join(b['env'])})" if b["required"]
                    else "none (not needed)")
            print(f"{b['backend']:<{width}}  {hint}")
        if b["base_url"]:
            print(f"{b['backend']:<{width}}  base URL {b['base_url']} (credentials file)")
    return 0
