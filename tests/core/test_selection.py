"""The one import point picks the compiled twin by default and the pure one on request."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ipfs_accelerate_api.core as core

PUBLIC = {
    "PriorityQueue": "pqueue",
    "TokenBucket": "ratelimit",
    "RateLimiter": "ratelimit",
    "CircuitBreaker": "breaker",
    "pack_batches": "packer",
    "pack_sorted": "packer",
    "l2_normalize": "vecmath",
    "cosine_similarity": "vecmath",
    "top_k": "vecmath",
}


def _probe(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "IPFS_ACCEL_NO_EXTENSIONS"}
    env.update(env_extra)
    code = (
        "import ipfs_accelerate_api.core as c;"
        "print(c.IMPLEMENTATION, c.PriorityQueue.__module__, c.top_k.__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _c_built() -> bool:
    try:
        import ipfs_accelerate_api.core._c.pqueue  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.c_extension
def test_compiled_twin_is_the_default() -> None:
    if not _c_built():
        pytest.skip("compiled twins not built (pure-Python install)")
    impl, qmod, vmod = _probe({}).split()
    assert impl == "c"
    assert qmod == "ipfs_accelerate_api.core._c.pqueue"
    assert vmod == "ipfs_accelerate_api.core._c.vecmath"


def test_environment_variable_forces_pure() -> None:
    impl, qmod, vmod = _probe({"IPFS_ACCEL_NO_EXTENSIONS": "1"}).split()
    assert impl == "python"
    assert qmod == "ipfs_accelerate_api.core._pure.pqueue"
    assert vmod == "ipfs_accelerate_api.core._pure.vecmath"


def test_zero_does_not_force_pure() -> None:
    impl = _probe({"IPFS_ACCEL_NO_EXTENSIONS": "0"}).split()[0]
    assert impl == ("c" if _c_built() else "python")


def test_implementation_matches_the_chosen_classes() -> None:
    expected = "_c" if core.IMPLEMENTATION == "c" else "_pure"
    for name, mod in PUBLIC.items():
        assert getattr(core, name).__module__ == f"ipfs_accelerate_api.core.{expected}.{mod}"
    if os.environ.get("IPFS_ACCEL_NO_EXTENSIONS", "") not in ("", "0"):
        assert core.IMPLEMENTATION == "python"


def test_core_all_is_complete() -> None:
    names = {n for n in dir(core) if not n.startswith(("_", "@"))} - {
        "annotations", "os", "platform", "TYPE_CHECKING", "NO_EXTENSIONS_ENV",
    }
    assert set(core.__all__) == names


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, sys, threading;"
        "import ipfs_accelerate_api;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "assert not logging.getLogger().handlers;"
        "assert 'numpy' not in sys.modules, 'numpy imported eagerly';"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
