"""The demo's phases, in order (see the package docstring)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

import numpy as np

from ..backends import backend
from ..config import BreakerPolicy, RetryPolicy
from ..core import IMPLEMENTATION, BreakerState, Priority, l2_normalize, top_k
from ..emulator import Emulator, FaultPlan, ServiceConfig
from ..emulator.tei import TEIService
from ..errors import CircuitOpenError, ServerError
from ..pipelines import EmbedSummary, embed_file
from ._corpus import corpus_lines
from ._ledger import Ledger, table

__all__ = ["FULL", "QUICK", "DemoPlan", "DemoResult", "run_demo"]

SEED = 7
#: Share of requests to every service that fail (500, 503, 429 or a reset connection).
FAULT_RATE = 0.03
FAULT_KINDS = ("500", "503", "429", "reset")
TEI_BATCH, TEI_CAPACITY = 32, 4
TEI_LATENCY = (0.004, 0.012)  # seconds per batch: a small GPU model
KEYS_PER_PROVIDER = 2
MAX_TOKENS = 48
PRIORITIES = (Priority.NORMAL, Priority.LOW, Priority.HIGH, Priority.NORMAL, Priority.LOW)
RETRY = RetryPolicy(max_retries=4, base_delay=0.1, max_delay=2.0)
BREAKER_THRESHOLD = 5


@dataclass(frozen=True)
class ChatService:
    """One chat service: its name (the backend's and the emulator's), a model it serves, its
    per-key quotas (``None``: none, a local server), its latency range, and how many
    requests it serves at once (``None``: no limit)."""

    name: str
    model: str
    rpm: float | None
    tpm: float | None
    latency: tuple[float, float]
    capacity: int | None = None


CHAT_SERVICES = (
    ChatService("openai", "gpt-4o-mini", 1500, 150_000, (0.03, 0.12)),
    ChatService("claude", "claude-sonnet-4-5", 1000, 80_000, (0.05, 0.15)),
    ChatService("gemini", "gemini-2.0-flash", 2000, 1_000_000, (0.02, 0.08)),
    ChatService("groq", "llama-3.1-8b-instant", 600, 60_000, (0.01, 0.04)),
    ChatService("ollama", "llama3.2", None, None, (0.08, 0.2), capacity=2),
)
#: The service whose reply is streamed live, and the one that has the outage.
STREAMED, OUTAGE = "claude", "openai"
STREAM_DELAY = 0.04  # seconds between streamed chunks

SYSTEM = "You are a concise assistant for a support team."
TASKS = ("Summarise in one sentence", "Classify the sentiment of", "Draft a short reply to",
         "List the key facts in", "Translate into plain English")


@dataclass(frozen=True)
class DemoPlan:
    """How much the demo does: corpus rows embedded, chat requests per backend, calls made
    while the breaker is open and after the service is back, and the breaker's recovery
    timeout (seconds)."""

    rows: int
    chats: int
    fast_fail: int
    after: int
    recovery: float


FULL = DemoPlan(rows=20_000, chats=60, fast_fail=20, after=10, recovery=1.0)
QUICK = DemoPlan(rows=1_000, chats=8, fast_fail=5, after=3, recovery=0.5)


@dataclass
class DemoResult:
    """What a run found: ``ok`` when every request was accounted for and every row written
    (``problems`` says what was not), the per-backend ``stats()``, and the kept output."""

    ok: bool
    problems: list[str]
    seconds: float
    rows: int
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    output: str | None = None


class _Demo:
    def __init__(self, plan: DemoPlan, out: TextIO,
                 progress: Callable[[int], Callable[[dict[str, Any]], None]] | None) -> None:
        self.plan, self.out, self.progress = plan, out, progress
        self.ledger = Ledger()
        self.problems: list[str] = []
        self.backends: dict[str, Any] = {}
        self.models: dict[str, str] = {}
        self.embed_summary = EmbedSummary()
        self.rows_written = self.rows_bad = 0

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # -- setup -------------------------------------------------------------------------------
    def keys(self, name: str) -> list[str]:
        """The emulator's test keys for ``name``: passed to the backend, so none is read from
        the environment or a credentials file."""
        n = 1 if name == "tei" else KEYS_PER_PROVIDER
        return [f"demo-{name}-key-{i + 1}" for i in range(n)]

    def start_emulator(self, stack: contextlib.ExitStack) -> Emulator:
        def faults(i: int) -> FaultPlan:
            return FaultPlan(rate=FAULT_RATE, kinds=FAULT_KINDS, seed=SEED + i)

        configs = {"tei": ServiceConfig(capacity=TEI_CAPACITY, latency=TEI_LATENCY,
                                        keys=self.keys("tei"), faults=faults(0))}
        for i, svc in enumerate(CHAT_SERVICES, 1):
            configs[svc.name] = ServiceConfig(
                latency=svc.latency, rpm=svc.rpm, tpm=svc.tpm, capacity=svc.capacity,
                keys=self.keys(svc.name), faults=faults(i),
                stream_delay=STREAM_DELAY if svc.name == STREAMED else 0.0)
        emu = Emulator(configs, seed=SEED)
        cast(TEIService, emu.services["tei"]).max_client_batch_size = TEI_BATCH
        emu.start()
        stack.callback(emu.stop)
        quotas = ", ".join(f"{s.name} {s.rpm:,.0f} rpm {s.tpm / 1000:,.0f}k tpm"
                           for s in CHAT_SERVICES if s.rpm and s.tpm)
        local = ", ".join(f"{s.name} {s.capacity} at a time (local)"
                          for s in CHAT_SERVICES if s.capacity)
        self.say(f"emulator: {emu.root_url}, in this process; {FAULT_RATE:.0%} of requests to "
                 f"each service fail ({', '.join(FAULT_KINDS)}); core: {IMPLEMENTATION}")
        self.say(f"  limits: tei batches of <= {TEI_BATCH}, {TEI_CAPACITY} at a time (429 "
                 f"beyond); {local}")
        self.say(f"  quotas per key ({KEYS_PER_PROVIDER} test keys each): {quotas}")
        return emu

    def open_backends(self, emu: Emulator, stack: contextlib.ExitStack) -> None:
        breaker = BreakerPolicy(failure_threshold=BREAKER_THRESHOLD,
                                recovery_timeout=self.plan.recovery)
        tei = backend("tei", base_url=emu.base_url("tei"), api_keys=self.keys("tei"),
                      max_concurrency=TEI_CAPACITY, retry=RETRY, breaker=breaker)
        stack.callback(tei.close)
        self.backends["tei"] = tei
        self.models["tei"] = cast(TEIService, emu.services["tei"]).model_id
        for svc in CHAT_SERVICES:
            ai = backend(svc.name, base_url=emu.base_url(svc.name), api_keys=self.keys(svc.name),
                         rpm=svc.rpm, tpm=svc.tpm, max_concurrency=4, retry=RETRY,
                         breaker=breaker)
            stack.callback(ai.close)
            self.backends[svc.name] = ai
            self.models[svc.name] = svc.model

    # -- 1. embedding ------------------------------------------------------------------------
    def embed(self, workdir: str) -> tuple[str, list[str]]:

        lines = corpus_lines(self.plan.rows)
        source = os.path.join(workdir, "corpus.txt")
        with open(source, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
        target = os.path.join(workdir, "corpus.npy")
        bar = self.progress(os.path.getsize(source)) if self.progress else None
        try:
            summary = embed_file(source, target, backend=self.backends["tei"], normalize=True,
                                 restart=True, progress=bar,
                                 command={"demo": True, "rows": self.plan.rows})
        finally:
            close = getattr(bar, "close", None)
            if close is not None:
                close()
        if summary.interrupted:  # embed_file stops cleanly on Ctrl-C: so does the demo
            raise KeyboardInterrupt
        tokens = (f"~{summary.tokens:,} tokens (an upper bound: TEI counts none)"
                  if summary.tokens_estimated
                  else f"{summary.tokens:,} tokens")
        self.say(f"embed: {summary.rows:,} rows x {summary.dimension} through TEI in "
                 f"{summary.seconds:.1f} s ({summary.rows_per_s:,.0f} rows/s), {tokens}; "
                 f"{summary.requests:,} requests, {summary.retries} retries, "
                 f"{summary.rate_limited} 429s seen, {summary.breaker_trips} breaker trips")
        self.embed_summary = summary
        self.check_rows(target, len(lines))
        return target, lines

    def check_rows(self, path: str, expected: int) -> None:
        matrix = np.load(path, mmap_mode="r")
        norms = np.linalg.norm(matrix, axis=1) if len(matrix) else np.zeros(0, np.float32)
        bad = int(np.count_nonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3)))
        self.rows_written = len(matrix)
        self.rows_bad = bad
        if len(matrix) != expected:
            self.problems.append(f"{expected - len(matrix)} of {expected} rows missing")
        if bad:
            self.problems.append(f"{bad} rows are not unit vectors (never written?)")

    # -- 2. chat -----------------------------------------------------------------------------
    def messages(self, i: int, lines: list[str]) -> list[dict[str, str]]:
        text = lines[(i * 7919) % len(lines)]
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{TASKS[i % len(TASKS)]}: {text}"}]

    def chat(self, lines: list[str], emu: Emulator) -> None:
        waits: dict[Priority, list[float]] = {p: [] for p in Priority}
        futures: list[Future[Any]] = []
        counts = {p: 0 for p in Priority}
        t0 = time.monotonic()
        for i in range(self.plan.chats):
            for j, svc in enumerate(CHAT_SERVICES):
                prio = PRIORITIES[i % len(PRIORITIES)]
                counts[prio] += 1
                sent = time.monotonic()
                fut = self.backends[svc.name].submit(
                    "chat", self.messages(i * len(CHAT_SERVICES) + j, lines), model=svc.model,
                    max_tokens=MAX_TOKENS, priority=prio)
                fut.add_done_callback(
                    lambda _f, s=sent, p=prio: waits[p].append(time.monotonic() - s))
                futures.append(self.ledger.watch(svc.name, fut))
        self.say(f"chat: {len(futures)} requests to {len(CHAT_SERVICES)} backends, submitted at "
                 f"once ({', '.join(f'{n} {p.name}' for p, n in counts.items())}), and one "
                 "more streamed live:")
        self.stream(lines)
        wait(futures)
        seconds = time.monotonic() - t0
        answered = sum(1 for f in futures if f.exception() is None)
        failed = len(futures) - answered
        by_prio = ", ".join(f"{p.name} {np.mean(w):.2f} s" for p, w in waits.items() if w)
        self.say(f"  {answered} answered{f', {failed} FAILED' if failed else ''} in "
                 f"{seconds:.1f} s; mean wait for the answer by priority: {by_prio}")
        held = sum(self.backends[s.name].stats()["limiter_waits"] for s in CHAT_SERVICES)
        quota_429 = 0
        for s in CHAT_SERVICES:
            rec = emu.stats(s.name)
            quota_429 += rec["sent_429"] - rec["faults"].get("429", 0)
        paced = (f"requests waited for their key's budget {held} times" if held
                 else "no request had to wait for its key's budget")
        self.say(f"  paced to each key's quota: {paced}; 429s for a spent quota: {quota_429} "
                 "(the injected ones were retried)")

    def stream(self, lines: list[str]) -> None:
        ai = self.backends[STREAMED]
        queued = ai.stats()["queue"]["size"]
        self.out.write(f"  {STREAMED} {self.models[STREAMED]} (HIGH, ahead of {queued} "
                       "queued):")
        self.out.flush()
        timing: dict[str, float] = {"t0": time.monotonic()}
        pieces = 0

        def go() -> None:
            nonlocal pieces
            for chunk in ai.stream_chat(self.messages(3, lines), model=self.models[STREAMED],
                                        max_tokens=MAX_TOKENS, priority=Priority.HIGH):
                if chunk.text:
                    timing.setdefault("first", time.monotonic())
                    pieces += 1
                    self.out.write(chunk.text if pieces > 1 else " " + chunk.text.lstrip())
                    self.out.flush()

        _, exc = self.ledger.call(STREAMED, go)
        end = time.monotonic()
        first = timing.get("first", end) - timing["t0"]
        if exc is None:
            self.say(f"  ({pieces} pieces in {end - timing['t0']:.2f} s, the first after "
                     f"{first * 1000:.0f} ms)")
        else:
            self.say(f"  (FAILED: {type(exc).__name__}: {exc})")

    # -- 3. outage ---------------------------------------------------------------------------
    def outage(self, emu: Emulator, lines: list[str]) -> None:
        ai, name = self.backends[OUTAGE], OUTAGE
        model = self.models[OUTAGE]
        expected = (ServerError, CircuitOpenError)
        healthy = emu.config(name).faults

        def call(i: int) -> tuple[Any, BaseException | None]:
            return self.ledger.call(name, lambda: ai.chat(self.messages(i, lines), model=model,
                                                          max_tokens=MAX_TOKENS), expected)

        def state() -> BreakerState:
            return cast(BreakerState, ai.engine.breaker.state)

        # 1/3: every request answered 503, until the breaker opens.
        emu.config(name).faults = FaultPlan(rate=1.0, kinds=("503",))
        reached = emu.stats(name)["requests"]
        errors: list[str] = []
        for i in range(2 * BREAKER_THRESHOLD):
            _, exc = call(i)
            errors.append(type(exc).__name__ if exc else "answered")
            if state() is BreakerState.OPEN:
                break
        reached = emu.stats(name)["requests"] - reached
        opened = state() is BreakerState.OPEN
        self.say(f"outage 1/3, {name} down (503 to everything): {len(errors)} "
                 f"call{'s' if len(errors) > 1 else ''} failed ({', '.join(sorted(set(errors)))}) "
                 f"after {reached} attempts in all, retries included; "
                 f"{'breaker OPEN' if opened else 'breaker NOT open'}")
        if not opened:
            self.problems.append(f"{name}'s breaker did not open in the outage")

        # 2/3: the breaker is open: calls fail fast, nothing reaches the service.
        reached = emu.stats(name)["requests"]
        t0 = time.monotonic()
        futures = [self.ledger.watch(name, ai.submit("chat", self.messages(i, lines), model=model,
                                                     max_tokens=MAX_TOKENS), expected)
                   for i in range(self.plan.fast_fail)]
        wait(futures)
        took = time.monotonic() - t0
        fast = sum(1 for f in futures if isinstance(f.exception(), CircuitOpenError))
        reached = emu.stats(name)["requests"] - reached
        self.say(f"outage 2/3, breaker open: {fast} of {len(futures)} calls failed fast with "
                 f"CircuitOpenError (all in {took * 1000:.1f} ms), {reached} reached {name}")
        if fast != len(futures) or reached:
            self.problems.append("calls went through while the breaker was open")

        # 3/3: the service is back: after the recovery timeout one probe goes through, the
        # breaker closes, calls are answered again.
        emu.config(name).faults = healthy
        t0 = time.monotonic()
        probes = 0
        closed = False
        for _ in range(5):  # a probe can meet one of the few injected faults: it reopens
            end = time.monotonic() + self.plan.recovery + 5.0
            while state() is BreakerState.OPEN and time.monotonic() < end:
                time.sleep(0.01)
            half_open = time.monotonic() - t0
            probes += 1
            _, exc = call(probes)
            if exc is None and state() is BreakerState.CLOSED:
                closed = True
                break
        futures = [self.ledger.watch(name, ai.submit("chat", self.messages(i, lines), model=model,
                                                     max_tokens=MAX_TOKENS))
                   for i in range(self.plan.after)]
        wait(futures)
        answered = sum(1 for f in futures if f.exception() is None)
        self.say(f"outage 3/3, {name} back: breaker HALF_OPEN after {half_open:.1f} s, "
                 f"{probes} probe call{'s' if probes > 1 else ''}, "
                 f"{'CLOSED' if closed else 'still NOT closed'}; "
                 f"{answered} of {len(futures)} calls answered")
        if not closed:
            self.problems.append(f"{name}'s breaker did not close after the outage")

    # -- 4. search ---------------------------------------------------------------------------
    def search(self, path: str, lines: list[str]) -> None:
        row = len(lines) * 7 // 10
        query = lines[row]
        vec, exc = self.ledger.call("tei", lambda: self.backends["tei"].embed(
            [query], priority=Priority.HIGH))
        if exc is not None:
            self.say(f"search: the query could not be embedded ({type(exc).__name__}: {exc})")
            return
        matrix = np.asarray(np.load(path, mmap_mode="r"))
        q = l2_normalize(np.asarray(vec, dtype=np.float32))[0]
        scores, idx = top_k(q, matrix, 3, normalized=True)
        brute = np.argsort(-(matrix @ q), kind="stable")[:3]
        same = [int(i) for i in idx] == [int(i) for i in brute]
        self.say(f"search: top 3 of {len(matrix):,} rows for the text of row {row:,} "
                 f"(C top_k; {'equal to' if same else 'DIFFERENT from'} a brute-force ranking):")
        self.say(f"  query: {query}")
        for rank, (s, i) in enumerate(zip(scores.tolist(), idx.tolist()), 1):
            self.say(f"  {rank}. row {i:>6,}  {s:.3f}  {lines[i]}")
        self.say("  (the emulator's vectors are a hash of the text, so only the same text "
                 "scores near 1; a real model ranks by meaning)")
        if not same:
            self.problems.append("top_k disagrees with the brute-force ranking")

    # -- 5. the table and the check ----------------------------------------------------------
    def report(self) -> dict[str, dict[str, Any]]:
        unfinished = self.ledger.settle()
        stats = {name: ai.stats() for name, ai in self.backends.items()}
        rows = []
        for name, s in stats.items():
            if name == "tei" and not s["prompt_tokens"]:
                tokens = f"~{self.embed_summary.tokens:,}"  # TEI reports none: the estimate
            else:
                tokens = f"{s['prompt_tokens'] + s['completion_tokens']:,}"
            rows.append((name, self.models[name], s, tokens))
        self.say()
        for line in table(rows):
            self.say(line)
        self.say()
        self.check(stats, unfinished)
        return stats

    def check(self, stats: dict[str, dict[str, Any]], unfinished: int) -> None:
        ledger = self.ledger
        sent = sum(ledger.sent.values())
        answered = ledger.count(answered=True)
        expected = ledger.failures(expected=True)
        unexpected = ledger.failures(expected=False)
        if unexpected:
            detail = "; ".join(ledger.first_unexpected.values())
            self.problems.append(f"{sum(unexpected.values())} requests failed unexpectedly "
                                 f"({detail})")
        if unfinished:
            self.problems.append(f"{unfinished} requests never finished")
        gaps = {n: s["submitted"] - s["succeeded"] - s["failed"] for n, s in stats.items()}
        for n, gap in gaps.items():
            if gap:
                self.problems.append(f"{n}: {gap} submitted requests neither succeeded nor failed")
        for svc in CHAT_SERVICES:  # every request to a chat backend is one the demo counted
            s = stats[svc.name]
            if s["submitted"] != ledger.sent[svc.name]:
                self.problems.append(f"{svc.name}: the engine saw {s['submitted']} requests, "
                                     f"the demo sent {ledger.sent[svc.name]}")
        tei_errors = dict(stats["tei"]["errors"])
        resent = tei_errors.pop("RateLimitError", 0)  # the pipeline sends such a batch again
        if tei_errors:
            self.problems.append(f"tei: embedding requests failed: {tei_errors}")
        failed = "".join(f" + {n} {cls}" for cls, n in sorted(expected.items()))
        self.say(f"check: the demo's {sent} chat, stream and search requests = {answered} answered"
                 f"{failed}{' (the outage: expected)' if failed else ''} + "
                 f"{sum(unexpected.values())} other failures + {unfinished} unfinished")
        summary = self.embed_summary
        self.say(f"  embedding: {self.rows_written:,} of {self.plan.rows:,} rows written, "
                 f"{self.rows_written - self.rows_bad:,} of them unit vectors; "
                 f"{summary.requests:,} requests"
                 f"{f' ({resent} refused with 429 after their retries, sent again)' if resent else ''}")
        agree = not any(gaps.values()) and all(
            stats[s.name]["submitted"] == ledger.sent[s.name] for s in CHAT_SERVICES)
        self.say(f"  engines: submitted = succeeded + failed on all {len(stats)} backends, and "
                 f"each chat backend's count is the demo's: {'yes' if agree else 'NO'}")


def run_demo(*, quick: bool = False, plan: DemoPlan | None = None, keep: str | None = None,
             progress: Callable[[int], Callable[[dict[str, Any]], None]] | None = None,
             out: TextIO | None = None) -> DemoResult:
    """Run the demo (see the package docstring), printing each phase to ``out`` (stdout).

    ``plan`` (default :data:`QUICK` when ``quick``, else :data:`FULL`) sets how much it does;
    ``keep`` is a directory for the corpus, its vectors and sidecar (default: a temporary
    one, removed at the end); ``progress(total_bytes)`` makes the embedding's progress
    callback (given :func:`~ipfs_accelerate_api.pipelines.embed_file`'s counters; closed
    with its ``close()`` if it has one).
    """
    demo = _Demo(plan or (QUICK if quick else FULL), out or sys.stdout, progress)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        if keep:
            os.makedirs(keep, exist_ok=True)
            workdir = keep
        else:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ipfs-accel-demo-"))
        emu = demo.start_emulator(stack)
        demo.open_backends(emu, stack)
        path, lines = demo.embed(workdir)
        demo.chat(lines, emu)
        demo.outage(emu, lines)
        demo.search(path, lines)
        stats = demo.report()
        handler_errors = emu.handler_errors()
        if handler_errors:  # an emulator bug, answered as a 500: worth knowing, not a loss
            demo.say(f"note: the emulator's handlers raised: {handler_errors}")
    seconds = time.monotonic() - t0
    ok = not demo.problems
    if ok:
        demo.say(f"OK: every request accounted for, nothing lost ({seconds:.1f} s)")
    else:
        for p in demo.problems:
            demo.say(f"LOST or WRONG: {p}")
    if keep:
        demo.say(f"kept: {os.path.join(keep, 'corpus.npy')} (+ corpus.json, corpus.txt)")
    return DemoResult(ok=ok, problems=list(demo.problems), seconds=seconds,
                      rows=demo.rows_written, stats=stats,
                      output=os.path.join(keep, "corpus.npy") if keep else None)
