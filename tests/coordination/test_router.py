"""Routers in two places sharing one Redis coordination: what one learns about a deployment
(its breaker opened, its quota spent) steers the other's choices."""

from __future__ import annotations

import pytest

import ipfs_accelerate_api as ia
from ipfs_accelerate_api import BreakerPolicy, RetryPolicy
from ipfs_accelerate_api.emulator import Emulator, FaultPlan

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def emu():
    with Emulator(seed=1) as e:
        yield e


def _router(emu, coordination):
    opts = {"retry": RetryPolicy(max_retries=0),
            "breaker": BreakerPolicy(failure_threshold=1, recovery_timeout=60)}
    deps = [{"group": "g", "backend": "openai", "model": "gpt-4o-mini", "id": "oa",
             "options": {"base_url": emu.base_url("openai"), "api_key": "sk-shared-oa", **opts}},
            {"group": "g", "backend": "groq", "model": "llama-3.1-8b-instant", "id": "gq",
             "options": {"base_url": emu.base_url("groq"), "api_key": "sk-shared-gq", **opts}}]
    return ia.Router(deps, strategy="order", coordination=coordination)


def test_a_breaker_opened_by_one_router_is_skipped_by_the_other(emu, coordinate) -> None:
    with _router(emu, coordinate()) as a, _router(emu, coordinate()) as b:
        emu.config("openai").faults = FaultPlan(script=["503"])
        assert a.chat(MSG, model="g").text  # openai fails once: its shared breaker opens
        before = emu.stats("openai")["requests"]
        for _ in range(3):
            assert b.chat(MSG, model="g").text  # b never tried openai: it knew
        assert emu.stats("openai")["requests"] == before
        assert b.stats()["deployments"]["oa"]["routed"] == 0


def test_without_coordination_the_other_router_learns_by_failing(emu) -> None:
    """The contrast: with local state only, the second router sends to the broken one."""
    with _router(emu, None) as a, _router(emu, None) as b:
        emu.config("openai").faults = FaultPlan(script=["503", "503"])
        a.chat(MSG, model="g")
        before = emu.stats("openai")["requests"]
        b.chat(MSG, model="g")
        assert emu.stats("openai")["requests"] == before + 1
