"""``ipfs-accel emulate``: serve every emulated service on one port."""

from __future__ import annotations

import argparse
import signal
import threading


def add(sub: argparse._SubParsersAction) -> None:
    em = sub.add_parser("emulate", help="run the local emulator of every AI service",
                        description="Serve every emulated service (real HTTP, each wire "
                                    "format) on one port, under a prefix each; the options "
                                    "apply to each. Prints every service's base URL.")
    em.add_argument("--host", default="127.0.0.1")
    em.add_argument("--port", type=int, default=8080)
    em.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    em.add_argument("--rpm", type=float, default=None, help="requests per minute per key")
    em.add_argument("--tpm", type=float, default=None, help="tokens per minute per key")
    em.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail")
    em.add_argument("--seed", type=int, default=0)
    em.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..emulator import SERVICES, Emulator, FaultPlan, ServiceConfig

    def config() -> ServiceConfig:  # one each: a service's configuration is live and its own
        return ServiceConfig(latency=args.latency, rpm=args.rpm, tpm=args.tpm,
                             faults=FaultPlan(rate=args.fault_rate, seed=args.seed))

    emu = Emulator({name: config() for name in SERVICES}, seed=args.seed, host=args.host,
                   port=args.port)
    stop = threading.Event()  # handlers first: a caller may stop us as soon as a line is out
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emu.start()
    for name in emu.services:
        print(f"{name}: {emu.base_url(name)}", flush=True)
    stop.wait()
    emu.stop()
    return 0
