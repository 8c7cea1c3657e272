"""Backends by name: ``backend("openai", api_key=...)``."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigurationError

__all__ = ["BACKENDS", "backend"]

#: name -> "module:Class" (imported on first use, so unused backends cost nothing)
BACKENDS = {
    "openai": "ipfs_accelerate_api.backends.openai:OpenAIBackend",
    "groq": "ipfs_accelerate_api.backends.groq:GroqBackend",
    "gemini": "ipfs_accelerate_api.backends.gemini:GeminiBackend",
    "google": "ipfs_accelerate_api.backends.gemini:GeminiBackend",
    "claude": "ipfs_accelerate_api.backends.claude:ClaudeBackend",
    "anthropic": "ipfs_accelerate_api.backends.claude:ClaudeBackend",
    "tgi": "ipfs_accelerate_api.backends.tgi:TGIBackend",
    "hf_tgi": "ipfs_accelerate_api.backends.tgi:TGIBackend",
    "ollama": "ipfs_accelerate_api.backends.ollama:OllamaBackend",
    "tei": "ipfs_accelerate_api.backends.tei:TEIBackend",
    "hf_tei": "ipfs_accelerate_api.backends.tei:TEIBackend",
    "ovms": "ipfs_accelerate_api.backends.ovms:OVMSBackend",
    "openvino": "ipfs_accelerate_api.backends.ovms:OVMSBackend",
    "opea": "ipfs_accelerate_api.backends.opea:OPEABackend",
    "llvm": "ipfs_accelerate_api.backends.llvm:LLVMBackend",
    "s3": "ipfs_accelerate_api.backends.s3:S3Backend",
    "s3_kit": "ipfs_accelerate_api.backends.s3:S3Backend",
}


def backend(name: str, **options: Any) -> Any:
    """Create the backend called ``name`` with ``options`` (see :class:`Backend`)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
