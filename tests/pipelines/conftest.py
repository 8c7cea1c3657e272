"""Fixtures for the pipeline tests: an emulator whose TEI service has small limits (so runs
cross many batches and windows), the expected vectors, and a runner of the CLI in a
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from ipfs_accelerate_api.emulator import Emulator, ServiceConfig
from ipfs_accelerate_api.emulator._server import embedding_for

DIM = 16
BATCH = 32


@pytest.fixture
def emu():
    with Emulator({"tei": ServiceConfig(capacity=8)}, seed=1) as e:  # = default concurrency
        e.services["tei"].dim = DIM
        e.services["tei"].max_client_batch_size = BATCH
        yield e
    e.assert_no_handler_errors()


@pytest.fixture
def tei_url(emu) -> str:
    return emu.base_url("tei")


def expected(texts: list[str]) -> np.ndarray:
    """The emulator's TEI vectors for ``texts`` (seed 1, DIM), as the pipeline must write them."""
    return np.vstack([embedding_for(t, DIM, 1) for t in texts]).astype(np.float32)


def embed_requests(emu) -> int:
    return emu.stats("tei")["by_path"].get("/embed", 0)


def cli(*args: str, stdin: bytes | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """``ipfs-accel ARGS`` in a subprocess with no provider keys in its environment."""
    clean = {k: v for k, v in os.environ.items()
             if not k.endswith(("_API_KEY", "_API_KEYS", "_BASE_URL", "_API_URL"))}
    clean["HOME"] = os.environ.get("HOME", "/tmp")
    return subprocess.run([sys.executable, "-m", "ipfs_accelerate_api.cli", *args],
                          input=stdin, capture_output=True, env={**clean, **(env or {})},
                          timeout=timeout)
