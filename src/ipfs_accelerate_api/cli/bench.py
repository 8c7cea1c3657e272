"""``ipfs-accel bench``: the quick client benchmark.

In a checkout (``benchmarks/`` beside ``src/``, with pytest-benchmark and nginx installed)
it runs the client suite of the README's performance table in quick mode
(``IPFS_ACCEL_BENCH_QUICK=1``, ``benchmarks/bench_client.py``) and prints its rows with
``benchmarks/report.py``. Otherwise (an installed package) it measures the per-call
overhead of our client against the bundled emulator, next to raw urllib3 sending the same
request to the same server, and prints that table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import EXIT

__all__ = ["add", "builtin", "run"]

#: The README suite's tests left out of the quick run: they time imports and a child process
#: (litellm's import alone takes seconds), not a client's per-call overhead.
SKIPPED = "not litellm and not import_time"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]


def add(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "bench", help="run the quick client benchmark (per-call overhead vs raw urllib3)",
        description="Run the quick client benchmark: in a checkout, the client rows of the "
                    "README's performance table (benchmarks/bench_client.py in quick mode, "
                    "against nginx); otherwise, or with --builtin, our client's per-call "
                    "time against the bundled emulator next to raw urllib3's.")
    p.add_argument("--builtin", action="store_true",
                   help="the built-in measurement against the emulator, even in a checkout")
    p.add_argument("--calls", type=int, default=200, metavar="N",
                   help="built-in: calls per round (default 200)")
    p.add_argument("--rounds", type=int, default=5, metavar="N",
                   help="built-in: rounds, the median is reported (default 5)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _suite() -> Path | None:
    """``benchmarks/`` of the checkout this package runs from, when its suite can run."""
    import shutil

    here = Path(__file__).resolve().parents[3] / "benchmarks"
    if not (here / "report.py").is_file() or not (here / "bench_client.py").is_file():
        return None
    if importlib.util.find_spec("pytest_benchmark") is None:
        return None
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        return None
    return here


def _report_module(suite: Path) -> Any:
    spec = importlib.util.spec_from_file_location("_ipfs_accel_bench_report", suite / "report.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _run_suite(suite: Path, as_json: bool) -> int:
    out = os.path.join(tempfile.mkdtemp(prefix="ipfs-accel-bench-"), "bench.json")
    cmd = [sys.executable, "-m", "pytest", str(suite / "bench_client.py"), "-q",
           "-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-only",
           f"--benchmark-json={out}", "--benchmark-max-time=0.5", "-o", "addopts=",
           "-k", SKIPPED]
    print(f"running {suite / 'bench_client.py'} in quick mode...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=suite, capture_output=True, text=True, check=False,
                          env={**os.environ, "IPFS_ACCEL_BENCH_QUICK": "1"})
    if done.returncode != 0 or not os.path.exists(out):
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the client benchmark failed (pytest exit {done.returncode}): "
                           f"{tail[0]}")
    report = _report_module(suite)
    groups = {g: rows for g, rows in report.load(out).items() if g.startswith("client:")}
    if as_json:
        print(json.dumps(groups, sort_keys=True, default=str))
        return EXIT["ok"]
    # report.render also lists every README target; keep those this run measured.
    lines = [line for line in report.render(groups).splitlines() if "| n/a |" not in line]
    lines[0] = lines[0].replace("(`python benchmarks/report.py`)",
                                "(`ipfs-accel bench`: benchmarks/bench_client.py, quick mode)")
    print("\n".join(lines))
    return EXIT["ok"]


def _median_per_call(call: Callable[[], Any], calls: int, rounds: int) -> float:
    call()  # warm: the connection is open before timing
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - t) / calls)
    return statistics.median(times)


def builtin(calls: int = 200, rounds: int = 5) -> dict[str, float]:
    """Seconds per sequential chat call against the emulator's OpenAI service: our client,
    raw urllib3 (the same request, no retries, no limits), and the difference."""
    import urllib3

    from ..backends import backend
    from ..emulator import Emulator

    with Emulator() as emu:
        url = emu.base_url("openai")
        ai = backend("openai", base_url=url, api_key="sk-bench", max_concurrency=1)
        pool = urllib3.PoolManager(maxsize=1, retries=False)
        headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

        def raw() -> None:
            body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
            resp = pool.request("POST", url + "/chat/completions", body=body, headers=headers)
            if resp.status != 200:
                raise RuntimeError(f"the emulator answered {resp.status}")
            json.loads(resp.data)["choices"][0]["message"]["content"]

        try:
            ours = _median_per_call(lambda: ai.chat(MESSAGES, model="gpt-4o-mini"), calls, rounds)
            plain = _median_per_call(raw, calls, rounds)
        finally:
            ai.close()
            pool.clear()
    return {"ipfs_accelerate_api": ours, "raw urllib3": plain, "overhead": ours - plain}


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if abs(seconds) < 1e-3 else f"{seconds * 1e3:.2f} ms"


def run(args: argparse.Namespace) -> int:
    if args.calls < 1 or args.rounds < 1:
        print("ipfs-accel bench: error: --calls and --rounds must be at least 1", file=sys.stderr)
        return EXIT["usage"]
    suite = None if args.builtin else _suite()
    if suite is not None:
        return _run_suite(suite, args.json)
    result = builtin(args.calls, args.rounds)
    if args.json:
        print(json.dumps({"calls": args.calls, "rounds": args.rounds,
                          "seconds_per_call": result}, sort_keys=True))
        return EXIT["ok"]
    ours, plain = result["ipfs_accelerate_api"], result["raw urllib3"]
    print(f"chat, sequential, against the bundled emulator (OpenAI service), median of "
          f"{args.rounds} rounds of {args.calls} calls:\n")
    print("| client | per call | vs raw urllib3 |")
    print("|---|---|---|")
    print(f"| raw urllib3 | {_fmt(plain)} | 1.00× |")
    print(f"| ipfs_accelerate_api | {_fmt(ours)} | {ours / plain:.2f}× |")
    print(f"\nour overhead per call: {_fmt(ours - plain)} (queue, limits, breaker, retries, "
          "typed response); the emulator's own time is in both rows.")
    return EXIT["ok"]
