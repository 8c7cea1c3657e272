"""Shared fixtures: ``impl`` runs a test once per twin of the core (ids ``c`` and ``py``)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

import ipfs_accelerate_api.core as core

_MODULES = ("pqueue", "ratelimit", "breaker", "packer", "vecmath")


def pytest_configure(config: pytest.Config) -> None:
    # .ci/run sets this when testing an installed wheel: prove the source tree is not used.
    if os.environ.get("IPFS_ACCEL_EXPECT_INSTALLED"):
        import ipfs_accelerate_api

        where = os.path.dirname(ipfs_accelerate_api.__file__)
        if "site-packages" not in where:
            raise pytest.UsageError(f"expected the installed package, got {where}")


def pytest_report_header(config: pytest.Config) -> str:
    import ipfs_accelerate_api

    return (f"ipfs_accelerate_api from {os.path.dirname(ipfs_accelerate_api.__file__)}; "
            f"core implementation {core.IMPLEMENTATION}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-c",
        action="store_true",
        default=False,
        help="fail (instead of skip) the C-twin tests when the extensions are not importable",
    )


@dataclass(frozen=True)
class Impl:
    """One twin of the core: its tag and its classes/functions by public name."""

    tag: str
    modules: dict[str, ModuleType]

    @property
    def is_pure(self) -> bool:
        return self.tag == "py"

    def __getattr__(self, name: str) -> Any:
        for mod in self.modules.values():
            if hasattr(mod, name):
                return getattr(mod, name)
        return getattr(core, name)  # shared names: Priority, BreakerState, errors


def _load(package: str) -> dict[str, ModuleType]:
    return {m: importlib.import_module(f"ipfs_accelerate_api.core.{package}.{m}") for m in _MODULES}


def _c_available() -> bool:
    try:
        _load("_c")
        return True
    except ImportError:
        return False


@pytest.fixture(
    scope="session",
    params=[pytest.param("c", marks=pytest.mark.c_extension, id="c"), pytest.param("py", id="py")],
)
def impl(request: pytest.FixtureRequest) -> Impl:
    if request.param == "c":
        if not _c_available():
            if request.config.getoption("--require-c"):
                pytest.fail("the compiled twins are not importable but --require-c was given")
            pytest.skip("compiled twins not built (pure-Python install)")
        return Impl("c", _load("_c"))
    return Impl("py", _load("_pure"))


class FakeClock:
    """A clock for tests: time moves only when told to (``advance`` or the fake ``sleep``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
