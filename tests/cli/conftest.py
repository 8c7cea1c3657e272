"""Fixtures for testing ``ipfs-accel`` end to end: the command runs in a subprocess (as a
user runs it) against an emulator started in the test process.

- ``emulator``: a running :class:`~ipfs_accelerate_api.emulator.Emulator` of every service
  (default settings, seed 1), fresh for each test; teardown fails the test if one of its
  handlers raised.
- ``make_emulator(services=None, **kw)``: more emulators, with the given
  ``{name: ServiceConfig}``; each is stopped (and checked) at teardown.
- ``cli(*args, input=None, env=None, timeout=120, cwd=None)``: runs
  ``python -m ipfs_accelerate_api.cli *args`` and returns a :class:`Result` (``rc``,
  ``stdout``, ``stderr``, all text). ``input`` (str or bytes) is its stdin.
  ``cli.popen(*args, **popen_kw)`` starts it without waiting (for signals, SIGKILL...);
  ``cli.env`` is the environment it gets; ``cli.on(emulator, service)`` the
  ``--backend NAME --base-url URL`` arguments for one of its services;
  ``cli.write_credentials({...}, mode=0o600)`` writes the credentials file it reads.

The environment is clean: no ``*_API_KEY*`` variable and no proxy from the caller's shell;
``HOME`` is an empty folder of the test's own, and ``IPFS_ACCEL_CREDENTIALS`` names a file
that does not exist until ``cli.write_credentials`` writes it (``cli.credentials``).
``IPFS_ACCEL_NO_EXTENSIONS`` passes through, so both modes of the core are tested; the
subprocess imports the same copy of the package as this test session. ``env=`` adds
variables to (or, with a value of None, removes them from) that environment for one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

import ipfs_accelerate_api
from ipfs_accelerate_api.emulator import Emulator

#: Variables passed through from the test's own environment (nothing else is).
PASS_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT",
                "IPFS_ACCEL_NO_EXTENSIONS", "VIRTUAL_ENV")

#: Where this session imports the package from: the subprocess gets the same copy.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ipfs_accelerate_api.__file__)))


@dataclass(frozen=True, repr=False)
class Result:
    """What a finished run of the command left: exit status and both outputs (text)."""

    rc: int
    stdout: str
    stderr: str
    args: tuple[str, ...] = ()

    def __repr__(self) -> str:  # what a failing ``assert ..., result`` shows
        return (f"ipfs-accel {' '.join(self.args)} -> rc {self.rc}\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}")

    @property
    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        return json.loads(self.stdout)


class Cli:
    """Runs ``ipfs-accel`` in a subprocess with a clean environment (see the module doc)."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.credentials = os.path.join(home, ".ipfs_api_credentials")
        env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
        # No PYTHONUNBUFFERED: a test of streaming must see what the command flushes itself.
        env.update({"HOME": home, "IPFS_ACCEL_CREDENTIALS": self.credentials,
                    "PYTHONPATH": PACKAGE_ROOT, "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1"})
        self.env = env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ipfs_accelerate_api.cli", *map(str, args)]

    def environment(self, env: Mapping[str, str | None] | None) -> dict[str, str]:
        out = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = v
        return out

    def __call__(self, *args: Any, input: str | bytes | None = None,
                 env: Mapping[str, str | None] | None = None, timeout: float = 120,
                 cwd: str | None = None) -> Result:
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(self.command(*args), input=data, capture_output=True, check=False,
                              env=self.environment(env), timeout=timeout, cwd=cwd or self.home)
        return Result(done.returncode, done.stdout.decode("utf-8", "replace"),
                      done.stderr.decode("utf-8", "replace"), tuple(map(str, args)))

    def popen(self, *args: Any, env: Mapping[str, str | None] | None = None,
              **popen_kw: Any) -> subprocess.Popen:
        popen_kw.setdefault("stdout", subprocess.PIPE)
        popen_kw.setdefault("stderr", subprocess.PIPE)
        popen_kw.setdefault("cwd", self.home)
        return subprocess.Popen(self.command(*args), env=self.environment(env), **popen_kw)

    def write_credentials(self, data: Mapping[str, Any], mode: int = 0o600) -> str:
        """Write the credentials file the command reads (JSON keyed by backend name) with
        permissions ``mode``; its path."""
        with open(self.credentials, "w", encoding="utf-8") as fh:
            json.dump(dict(data), fh)
        os.chmod(self.credentials, mode)
        return self.credentials

    @staticmethod
    def on(emu: Emulator, service: str, backend: str | None = None) -> list[str]:
        """``--backend NAME --base-url URL`` for the emulator's ``service``."""
        return ["--backend", backend or service, "--base-url", emu.base_url(service)]


@pytest.fixture
def cli(tmp_path: Any) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(str(home))


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def make(services: Mapping[str, Any] | None = None, **kw: Any) -> Emulator:
        kw.setdefault("seed", 1)
        emu = Emulator(services, **kw).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()
    for emu in started:
        emu.assert_no_handler_errors()


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()
