"""The product's main job on the embedded emulator, with nothing configured and no network
(``ipfs-accel demo``).

    from ipfs_accelerate_api.demo import run_demo
    result = run_demo(quick=True)          # prints each phase; result.ok: nothing was lost

One run, in phases, each printed as it ends:

1. the emulator starts in this process on a free loopback port, with realistic limits (TEI
   with a batch limit of 32 and a capacity of 4; per-key request and token quotas for the
   providers; a local Ollama that serves two at a time) and 3% injected faults everywhere;
2. the bundled corpus (:func:`corpus_lines`, 20,000 short texts) is embedded through TEI by
   :func:`~ipfs_accelerate_api.pipelines.embed_file`, into a temporary directory (or ``keep``);
3. chat requests go to OpenAI, Claude, Gemini, Groq and Ollama at mixed priorities, all
   submitted at once, with one reply streamed live at high priority while the rest queue;
4. a scripted outage: one service answers 503 to everything, its breaker opens, calls fail
   fast with :class:`~ipfs_accelerate_api.errors.CircuitOpenError`, the service comes back
   and the breaker closes again;
5. a search over the embedded rows with the C ``top_k``, checked against a brute-force one;
6. a table per backend (requests, succeeded, failed, retried, 429s seen, breaker trips,
   p50/p99 latency, tokens) and the check that every request was accounted for: each ended
   in an answer or in an exception the outage explains, and every row was written.

The demo passes the emulator's own test keys and URLs to every backend, so no key, URL or
credentials file from the environment is ever read.
"""

from __future__ import annotations

from ._corpus import CORPUS, corpus_lines
from ._run import FULL, QUICK, DemoPlan, DemoResult, run_demo

__all__ = ["CORPUS", "FULL", "QUICK", "DemoPlan", "DemoResult", "corpus_lines", "run_demo"]
