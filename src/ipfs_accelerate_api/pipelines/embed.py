"""The embedding pipeline: texts in, one float32 matrix out, as fast as the service allows,
never losing a row.

- :func:`embed_iter` embeds any iterable of texts and yields ``(row, block)`` as batches
  finish (in any order: ``block`` holds rows ``row .. row + len(block) - 1``).
- :func:`embed_file` reads a file (or stdin) as a stream, writes ``OUT.npy`` through a
  memory map as batches finish plus the ``OUT.json`` sidecar, and checkpoints as it goes
  (``OUT.npy.ckpt`` beside it): killed at any moment and run again with the same arguments,
  it embeds only what was not finished, and the output is byte-identical to an
  uninterrupted run.

Both read the input in *windows* of records (memory stays constant), pack each window into
batches with the C packer to the backend's limits (:meth:`Backend.embed_limits`), and keep
a bounded number of batches in flight through the engine (its concurrency, rate limits,
retries, breaker and key pool apply). The state is the call's own: no global state, so one
process may run several pipelines (one per shard) at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..core import l2_normalize, pack_batches
from ..errors import InputError, ResumeConflict
from .checkpoint import Checkpoint, NpyWriter
from .records import HashingReader, Record, read_records

__all__ = ["EmbedSummary", "embed_file", "embed_iter"]

#: Records per window: read, hashed and packed together (a multiple of any batch size).
WINDOW_RECORDS = 8192
#: Seconds between checkpoint commits (each one fsyncs the output and the checkpoint).
COMMIT_EVERY = 0.5


@dataclass
class EmbedSummary:
    """What a run did. ``rows`` is the output's row count; ``embedded`` the rows this run
    sent (fewer than ``rows`` when it resumed); the request figures are this run's."""

    rows: int = 0
    embedded: int = 0
    resumed_rows: int = 0
    dropped: int = 0
    dimension: int | None = None
    seconds: float = 0.0
    rows_per_s: float = 0.0
    tokens: int = 0
    tokens_estimated: bool = False
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    breaker_trips: int = 0
    output: str | None = None
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the flow of batches through the engine -------------------------------------------------
class _Flow:
    """Batches submitted as one request each; finished ones handed back in the order they
    finish. How many are in flight adapts to the service: each 429 the engine sees lowers
    the limit by one (down to 1), a run of successes raises it again (up to ``limit``), so a
    server with a small capacity is kept full without being flooded. A batch that still
    fails with a 429 after the engine's retries is sent again (it is never dropped); any
    other failure stops new submissions: what is in flight still finishes (and is handed
    back), then the failure is raised."""

    #: Times one batch is sent again after the engine gave up on its 429s.
    RESENDS = 5

    def __init__(self, backend: Any, model: str | None, params: Mapping[str, Any],
                 normalize: bool, limit: int) -> None:
        self._backend = backend
        self._engine = backend.engine
        self._model = model
        self._params = dict(params)
        self._normalize = normalize
        self._max = self._limit = max(1, limit)
        self._seen_429 = self._engine.rate_limited
        self._streak = 0
        #: each batch in flight -> (its first row, its texts, its tokens, times resent). The
        #: futures themselves are the state: an interrupt (Ctrl-C) at any point leaves no
        #: count out of step with them, so a drain never waits for a batch that is gone.
        self._pending: dict[Future, tuple[int, list[str], int, int]] = {}
        self.error: BaseException | None = None
        self.estimated_tokens = 0

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def submit(self, start: int, texts: list[str], tokens: int) -> Iterator[tuple[int, np.ndarray]]:
        """Send one batch (rows ``start..``), first handing back finished ones while the
        limit is reached."""
        while self.outstanding >= self._limit and self.error is None:
            yield from self._take(block=True)
        yield from self._take(block=False)
        if self.error is not None:
            return
        self.estimated_tokens += tokens
        self._send(start, texts, tokens, 0)

    def _send(self, start: int, texts: list[str], tokens: int, resends: int) -> None:
        fut = self._backend.submit_embed_request(texts, model=self._model, **self._params)
        self._pending[fut] = (start, texts, tokens, resends)

    def _adapt(self) -> None:
        seen = self._engine.rate_limited
        if seen > self._seen_429:
            self._limit = max(1, self._limit - (seen - self._seen_429))
            self._seen_429, self._streak = seen, 0
            return
        self._streak += 1
        if self._limit < self._max and self._streak >= 4 * self._limit:
            self._limit += 1
            self._streak = 0

    def _take(self, block: bool) -> Iterator[tuple[int, np.ndarray]]:
        from ..errors import RateLimitError

        while self._pending:
            done, _ = wait(list(self._pending), timeout=None if block else 0,
                           return_when=FIRST_COMPLETED)
            if not done:
                return
            block = False
            fut = next(iter(done))
            start, texts, tokens, resends = self._pending.pop(fut)
            self._adapt()
            exc = fut.exception()
            if isinstance(exc, RateLimitError) and resends < self.RESENDS and self.error is None:
                self._send(start, texts, tokens, resends + 1)
                continue
            if exc is not None:
                if self.error is None:
                    self.error = exc
                continue
            vectors = np.asarray(fut.result(), dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != len(texts):
                if self.error is None:
                    self.error = ValueError(f"{len(texts)} texts sent, {vectors.shape} came back")
                continue
            if self._normalize:
                vectors = l2_normalize(vectors)
            yield start, vectors

    def drain(self) -> Iterator[tuple[int, np.ndarray]]:
        while self.outstanding:
            yield from self._take(block=True)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def _batches(backend: Any, start: int, texts: list[str]) -> Iterator[tuple[int, list[str], int]]:
    """``texts`` (rows ``start..``) packed to the backend's limits: (row, texts, tokens)."""
    if not texts:
        return
    max_items, max_tokens = backend.embed_limits()
    counts = backend.embed_token_counts(texts)
    for a, b in pack_batches(counts, max_items, max_tokens).tolist():
        yield start + a, texts[a:b], sum(counts[a:b])


def _in_flight_limit(backend: Any) -> int:
    """Batches submitted at once by default: twice the engine's concurrency, so a worker that
    finishes one finds the next already queued (none waits for this thread to hand it over)."""
    return 2 * backend.engine.max_concurrency


def _open_backend(backend: Any, options: Mapping[str, Any]) -> tuple[Any, bool]:
    """(the backend, whether this call made it and so closes it)."""
    if isinstance(backend, str):
        from ..backends import backend as make

        return make(backend, **options), True
    if options:
        raise TypeError("backend options are for a backend given by name; "
                        "this one is already built")
    return backend, False


def embed_iter(texts: Iterable[str], *, backend: Any, model: str | None = None,
               normalize: bool = False, params: Mapping[str, Any] | None = None,
               window: int = WINDOW_RECORDS, max_in_flight: int | None = None,
               **backend_options: Any) -> Iterator[tuple[int, np.ndarray]]:
    """Embed ``texts`` (any iterable, read as it goes): yields ``(row, block)`` as batches
    finish, ``block`` a float32 array holding rows ``row .. row + len(block) - 1`` (in
    finishing order, not input order). ``backend`` is a backend, or a name built with
    ``backend_options`` (and closed at the end). ``params`` go to every embedding request
    (``dimensions``, ``truncate``...). A batch that fails after the engine's retries stops
    the run: the batches in flight finish and are yielded, then its error is raised."""
    ai, owned = _open_backend(backend, backend_options)
    try:
        flow = _Flow(ai, model, params or {}, normalize, max_in_flight or _in_flight_limit(ai))
        row, chunk = 0, []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"embed_iter takes strings; item {row + len(chunk)} is "
                                f"{type(text).__name__}")
            chunk.append(text)
            if len(chunk) >= window:
                for start, part, tokens in _batches(ai, row, chunk):
                    yield from flow.submit(start, part, tokens)
                row, chunk = row + len(chunk), []
        for start, part, tokens in _batches(ai, row, chunk):
            yield from flow.submit(start, part, tokens)
        yield from flow.drain()
        flow.raise_error()
    finally:
        if owned:
            ai.close()


# -- files ---------------------------------------------------------------------------------
def _window_hash(records: list[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.line}\x1f{r.bad or ''}\x1f".encode())
        h.update((r.text or "").encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


def _pending(start: int, count: int, done: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs of rows ``start .. start + count`` that ``done`` does not cover."""
    end, at, out = start + count, start, []
    for a, b in sorted(done):
        if b <= at or a >= end:
            continue
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < end:
        out.append((at, end))
    return out


def _source_size(path: str) -> int | None:
    if path == "-":
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", source=path) from None
    return st.st_size if os.path.isfile(path) else None


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def embed_file(path: str, out: str, *, backend: Any, model: str | None = None,
               format: str = "text", field: str | None = None, column: str | None = None,
               normalize: bool = False, skip_empty: bool = False, on_bad_record: str = "stop",
               params: Mapping[str, Any] | None = None, restart: bool = False,
               max_in_flight: int | None = None,
               progress: Callable[[dict[str, Any]], None] | None = None,
               command: Mapping[str, Any] | None = None,
               **backend_options: Any) -> EmbedSummary:
    """Embed every record of ``path`` (``-``: stdin; gzip recognised) into ``out`` (a
    float32 ``.npy``, row i = kept record i) and ``out``'s ``.json`` sidecar. Resumes the
    unfinished run beside ``out`` when there is one (refusing, with
    :class:`ResumeConflict`, one made with another input, model or option, unless
    ``restart``). ``format`` is ``text`` (a record per line), ``jsonl`` (``field``, dotted
    paths allowed) or ``csv`` (``column``); ``skip_empty`` drops empty records and
    ``on_bad_record="skip"`` drops bad ones (both listed in the sidecar), where the default
    ``"stop"`` raises :class:`InputError` naming the line. ``progress`` is called with a
    dict of counters as batches finish. ``command`` (the CLI's options) goes into the
    sidecar. A KeyboardInterrupt stops cleanly: what finished is checkpointed, the summary
    says ``interrupted``."""
    if on_bad_record not in ("stop", "skip"):
        raise ValueError(f"on_bad_record must be 'stop' or 'skip', got {on_bad_record!r}")
    if not out.endswith(".npy"):
        raise ValueError(f"the output must be a .npy path, got {out!r}")
    size = _source_size(path)
    ai, owned = _open_backend(backend, backend_options)
    try:
        fingerprint = {
            "source": "-" if path == "-" else os.path.abspath(path), "source_size": size,
            "format": format, "field": field, "column": column, "skip_empty": skip_empty,
            "on_bad_record": on_bad_record, "backend": ai.name, "base_url": ai.base_url,
            "model": model, "normalize": normalize, "params": dict(params or {}),
        }
        return _FileRun(ai, path, out, fingerprint, restart=restart, normalize=normalize,
                        params=params or {}, max_in_flight=max_in_flight, progress=progress,
                        command=command).run()
    finally:
        if owned:
            ai.close()


class _FileRun:
    """One :func:`embed_file` run: reading windows, sending batches, writing rows,
    checkpointing, and the summary."""

    def __init__(self, ai: Any, path: str, out: str, fingerprint: dict[str, Any], *,
                 restart: bool, normalize: bool, params: Mapping[str, Any],
                 max_in_flight: int | None, progress: Any, command: Any) -> None:
        self.ai, self.path, self.out, self.fp = ai, path, out, fingerprint
        self.partial, self.ckpt_path = out + ".partial", out + ".ckpt"
        if restart or not os.path.exists(self.partial):
            fresh = True
        else:
            fresh = False
        self.ckpt = Checkpoint(self.ckpt_path, fingerprint, restart=fresh)
        self.writer = NpyWriter(self.partial, fresh=fresh)
        self.writer.dim = self.ckpt.dim
        self.window = self.ckpt.window_records or WINDOW_RECORDS
        self.flow = _Flow(ai, fingerprint["model"], params, normalize,
                          max_in_flight or _in_flight_limit(ai))
        self.progress = progress
        self.command = dict(command or {})
        self.summary = EmbedSummary(output=out)
        self.done_since: list[tuple[int, int]] = []
        self.last_commit = time.monotonic()
        self.rows_read = 0
        self.reader: list[HashingReader] = []

    # -- finished batches --------------------------------------------------------------------
    def _store(self, start: int, block: np.ndarray) -> None:
        if self.writer.dim is None:
            self.writer.dim = block.shape[1]
            self.ckpt.note_dim(block.shape[1])
        elif block.shape[1] != self.writer.dim:
            raise ValueError(f"the service answered {block.shape[1]}-dimensional vectors "
                             f"after {self.writer.dim}-dimensional ones")
        self.writer.write(start, block)
        self.done_since.append((start, start + len(block)))
        self.summary.embedded += len(block)
        now = time.monotonic()
        if now - self.last_commit >= COMMIT_EVERY:
            self._commit(now)
        if self.progress is not None:
            self.progress(self._counters())

    def _commit(self, now: float | None = None) -> None:
        if self.done_since:
            self.ckpt.note_done(self.done_since)
            self.done_since = []
        self.ckpt.commit(self.writer)
        self.last_commit = now or time.monotonic()

    def _counters(self) -> dict[str, Any]:
        """For the progress callback, after every finished batch: the engine's two plain
        counters, not a whole ``stats()`` (percentiles, keys, cost) each time."""
        engine = self.ai.engine
        return {"rows": self.summary.resumed_rows + self.summary.embedded,
                "embedded": self.summary.embedded, "rows_read": self.rows_read,
                "bytes_read": self.reader[0].size if self.reader else 0,
                "retries": engine.retried - self.base["retried"],
                "rate_limited": engine.rate_limited - self.base["rate_limited"]}

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> EmbedSummary:
        t0 = time.monotonic()
        stats = self.ai.stats()
        self.base = {"retried": stats.get("retried", 0),
                     "rate_limited": stats.get("rate_limited", 0),
                     "submitted": stats.get("submitted", 0),
                     "prompt_tokens": stats.get("prompt_tokens", 0),
                     "trips": (stats.get("breaker") or {}).get("trips", 0)}
        self.summary.resumed_rows = sum(b - a for a, b in self.ckpt.done)
        try:
            self._read_and_send()
            for start, block in self.flow.drain():
                self._store(start, block)
            self.flow.raise_error()
        except KeyboardInterrupt:
            self.summary.interrupted = True
            try:
                for start, block in self.flow.drain():
                    self._store(start, block)
            except KeyboardInterrupt:
                pass
        except BaseException:
            try:  # keep what finished, so the next run does not send it again
                for start, block in self.flow.drain():
                    self._store(start, block)
            finally:
                self._commit()
                self.ckpt.close()
                self.writer.close()
            raise
        self._commit()
        if self.summary.interrupted:
            self.ckpt.close()
            self.writer.close()
        else:
            self._finish()
        self._summarise(t0)
        return self.summary

    def _read_and_send(self) -> None:
        fp = self.fp
        records = read_records(self.path, format=fp["format"], field=fp["field"],
                               column=fp["column"], reader=self.reader)
        index, row = 0, 0
        batch: list[Record] = []
        for rec in records:
            batch.append(rec)
            if len(batch) >= self.window:
                row = self._window(index, row, batch)
                index, batch = index + 1, []
        if batch:
            row = self._window(index, row, batch)
        self.rows_total = row

    def _window(self, index: int, row: int, records: list[Record]) -> int:
        """Check (or note) one window of records, send its rows that are not done; the
        next window's first row."""
        fp = self.fp
        texts: list[str] = []
        dropped: list[list[Any]] = []
        for r in records:
            if r.bad is not None:
                if fp["on_bad_record"] == "stop":
                    raise InputError(f"{self.path}, line {r.line}: {r.bad} "
                                     "(--on-bad-record skip drops such records)",
                                     line=r.line, source=self.path)
                dropped.append([r.line, r.bad])
            elif fp["skip_empty"] and r.text == "":
                dropped.append([r.line, "empty"])
            else:
                texts.append(r.text)  # type: ignore[arg-type]
        entry = {"window": index, "row": row, "count": len(texts), "records": self.window,
                 "sha256": _window_hash(records), "dropped": dropped}
        seen = self.ckpt.windows.get(index)
        if seen is None:
            self.ckpt.note_window(entry)
        elif any(seen.get(k) != entry[k] for k in ("row", "count", "sha256")):
            raise ResumeConflict(
                f"{self.path} changed since the unfinished run beside {self.out} started "
                f"(records {index * self.window + 1}..{index * self.window + len(records)} "
                "differ); run again with restart (--restart) to start over")
        self.rows_read = row + len(texts)
        for a, b in _pending(row, len(texts), self.ckpt.done):
            for start, part, tokens in _batches(self.ai, a, texts[a - row:b - row]):
                for done_start, block in self.flow.submit(start, part, tokens):
                    self._store(done_start, block)
                if self.flow.error is not None:
                    self.flow.raise_error()
        return row + len(texts)

    def _finish(self) -> None:
        rows = self.rows_total
        covered = sum(b - a for a, b in _merge(self.ckpt.done))
        if covered != rows:
            raise RuntimeError(f"internal error: {covered} of {rows} rows written")
        if self.writer.dim is None:  # nothing to embed at all
            self.writer.dim = 0
        dropped = [d for w in sorted(self.ckpt.windows) for d in self.ckpt.windows[w]["dropped"]]
        hashed = self.reader[0] if self.reader else None
        fp = self.fp
        sidecar = {
            "backend": fp["backend"], "base_url": fp["base_url"], "model": fp["model"],
            "dimension": self.writer.dim, "count": rows, "normalized": fp["normalize"],
            "dtype": "float32",
            "source": {"path": fp["source"], "size": hashed.size if hashed else None,
                       "sha256": hashed.sha256.hexdigest() if hashed else None},
            "input": {"format": fp["format"], "field": fp["field"], "column": fp["column"],
                      "skip_empty": fp["skip_empty"], "on_bad_record": fp["on_bad_record"]},
            "params": fp["params"], "options": self.command,
            "dropped": [{"line": line, "reason": why} for line, why in dropped],
            "created_by": f"ipfs-accelerate-api {__version__}",
        }
        self.summary.dropped = len(dropped)
        self.summary.dimension = self.writer.dim
        self.writer.finish(rows, self.out)
        _write_json(self.out[:-4] + ".json", sidecar)
        self.ckpt.close(remove=True)

    def _summarise(self, t0: float) -> None:
        s = self.summary
        stats = self.ai.stats()
        s.rows = s.resumed_rows + s.embedded
        s.dimension = s.dimension or self.writer.dim
        s.seconds = round(time.monotonic() - t0, 3)
        s.rows_per_s = round(s.embedded / s.seconds, 1) if s.seconds > 0 else 0.0
        reported = stats.get("prompt_tokens", 0) - self.base["prompt_tokens"]
        s.tokens = reported or self.flow.estimated_tokens
        s.tokens_estimated = not reported
        s.requests = stats.get("submitted", 0) - self.base["submitted"]
        s.retries = stats.get("retried", 0) - self.base["retried"]
        s.rate_limited = stats.get("rate_limited", 0) - self.base["rate_limited"]
        s.breaker_trips = (stats.get("breaker") or {}).get("trips", 0) - self.base["trips"]


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
