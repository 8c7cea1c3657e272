"""A local emulator of the AI services: real HTTP on loopback, each service's wire format.

    from ipfs_accelerate_api.emulator import Emulator, ServiceConfig, FaultPlan

    with Emulator({"openai": ServiceConfig(rpm=600, latency=0.01)}) as emu:
        url = emu.base_url("openai")          # http://127.0.0.1:PORT/openai/v1
        ...
        emu.stats("openai")["peak_concurrency"]

From the shell: ``ipfs-accel emulate --port 8080``. In pytest: the ``ai_emulator`` fixture.

It is as strict as the services: a request the real API refuses (a wrong type, a value out
of range, an unknown field or model) gets that API's error, counted in
``stats(name)["refused"]``. Models beyond a service's own list: ``ServiceConfig(models=...)``.
A handler that raises answers the service's 500 and is kept in ``handler_errors()``.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from ._server import EmulatorServer, FaultPlan, Service, ServiceConfig

__all__ = ["Emulator", "FaultPlan", "ServiceConfig", "SERVICES"]


def _services() -> dict[str, type[Service]]:
    from .anthropic import ClaudeService
    from .gemini import GeminiService
    from .groq import GroqService
    from .llvm import LLVMService
    from .ollama import OllamaService
    from .openai import OpenAIService
    from .opea import OPEAService
    from .ovms import OVMSService
    from .tei import TEIService
    from .tgi import TGIService

    return {"openai": OpenAIService, "claude": ClaudeService, "groq": GroqService,
            "gemini": GeminiService, "tgi": TGIService, "ollama": OllamaService,
            "tei": TEIService, "ovms": OVMSService, "opea": OPEAService,
            "llvm": LLVMService}


#: Names of the emulated services.
SERVICES = ("openai", "claude", "groq", "gemini", "tgi", "ollama", "tei", "ovms", "opea",
            "llvm")

#: The API path below each service's prefix that clients use as their base URL (Anthropic's
#: clients add ``/v1`` to every path themselves).
_BASE_PATHS = {"openai": "/v1", "claude": "", "groq": "/openai/v1", "gemini": "/v1beta",
               "tgi": "", "ollama": "", "tei": "", "ovms": "", "opea": "",
               "llvm": ""}


class Emulator:
    """Runs the emulator in a background thread (``with`` starts and stops it).

    Args:
        services: service name -> :class:`ServiceConfig`; names left out run with defaults.
        seed: makes replies and fault draws repeatable.
        host, port: where to listen (port 0 picks a free one).
    """

    def __init__(self, services: Mapping[str, ServiceConfig] | None = None, *, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        classes = _services()
        configs = dict(services or {})
        unknown = set(configs) - set(classes)
        if unknown:
            raise ValueError(f"unknown emulated services: {sorted(unknown)}; known: {sorted(classes)}")
        self.services = {name: cls(configs.get(name) or ServiceConfig(), seed)
                         for name, cls in classes.items()}
        self._address = (host, port)
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Emulator":
        self._server = EmulatorServer(self._address, self.services)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ipfs-accel-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    def base_url(self, service: str) -> str:
        """The base URL a client of ``service`` should use."""
        if service not in self.services:
            raise ValueError(f"unknown service {service!r}")
        return f"{self.root_url}/{service}{_BASE_PATHS.get(service, '')}"

    def config(self, service: str) -> ServiceConfig:
        """The live configuration of ``service`` (changes apply to the next request)."""
        return self.services[service].config

    def stats(self, service: str) -> dict[str, Any]:
        """What ``service`` saw: requests per key and path, peak concurrency, 429s, faults,
        refused requests per param, and ``handler_errors`` (exceptions its handlers raised)."""
        return self.services[service].record.snapshot()

    def handler_errors(self) -> dict[str, list[str]]:
        """Exceptions the handlers raised, per service (only those with any): each one is an
        emulator bug that a client saw as a 500."""
        out = {}
        for name, service in self.services.items():
            errors = service.record.snapshot()["handler_errors"]
            if errors:
                out[name] = errors
        return out

    def assert_no_handler_errors(self) -> None:
        """Fail (``AssertionError``) if any handler raised; for a test's teardown."""
        errors = self.handler_errors()
        if errors:
            raise AssertionError(f"the emulator's handlers raised (answered as 500s): {errors}")

    def record(self, service: str) -> Any:
        return self.services[service].record
