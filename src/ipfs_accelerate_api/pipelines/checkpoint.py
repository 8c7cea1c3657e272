"""What makes a run resumable: the output being written (``OUT.partial``, a ``.npy`` whose
header is written last) and its checkpoint (``OUT.ckpt``, JSON lines, fsynced).

The checkpoint's first line is the run's fingerprint (input, backend, model, options); then
a line per window of input read (its index, its first row, its row count, a SHA-256 of its
records, the records it dropped), the vectors' dimension once known, and a line per batch
of rows written. A batch's line is written only after its rows are in the output file, so a
run killed at any moment finds, on its next start, only rows that really are there.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from ..errors import ResumeConflict

__all__ = ["Checkpoint", "NpyWriter", "HEADER_BYTES", "npy_header"]

#: Bytes reserved for the ``.npy`` header (numpy's own for any 2-D float32 shape: 128).
HEADER_BYTES = 128
VERSION = 1


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def npy_header(rows: int, dim: int) -> bytes:
    """numpy's version 1.0 header for a C-ordered little-endian float32 (rows, dim) array."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    header = buf.getvalue()
    if len(header) != HEADER_BYTES:
        raise ValueError(f"a .npy header of {len(header)} bytes; {HEADER_BYTES} were reserved")
    return header


class NpyWriter:
    """Rows written at their place through a memory map, in any order; the header last."""

    def __init__(self, path: str, *, fresh: bool) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o644)
        self._size = os.fstat(self._fd).st_size
        self.dim: int | None = None

    def _grow(self, size: int) -> None:
        if size > self._size:
            os.ftruncate(self._fd, size)
            self._size = size

    def write(self, start: int, block: np.ndarray) -> None:
        assert self.dim is not None and block.shape[1] == self.dim
        if not len(block):
            return
        row = self.dim * 4
        self._grow(HEADER_BYTES + (start + len(block)) * row)
        view = np.memmap(self.path, dtype="<f4", mode="r+", offset=HEADER_BYTES + start * row,
                         shape=block.shape)
        view[:] = block
        del view  # MAP_SHARED: the rows are in the page cache now, a kill cannot lose them

    def sync(self) -> None:
        os.fsync(self._fd)

    def finish(self, rows: int, final: str) -> None:
        """Header written, file cut to size, fsynced, renamed to ``final``."""
        dim = self.dim or 0
        size = HEADER_BYTES + rows * dim * 4
        os.ftruncate(self._fd, size)
        os.pwrite(self._fd, npy_header(rows, dim), 0)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.path, final)
        _fsync_dir(final)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Checkpoint:
    """The run's progress, appended as JSON lines and fsynced at each :meth:`commit`."""

    def __init__(self, path: str, fingerprint: dict[str, Any], *, restart: bool) -> None:
        self.path = path
        self.windows: dict[int, dict[str, Any]] = {}
        self.done: list[tuple[int, int]] = []
        self.dim: int | None = None
        self.window_records: int | None = None
        self.resumed = False
        if restart or not os.path.exists(path):
            self._fresh(fingerprint)
        else:
            self._load(fingerprint)
            self.resumed = True
        self._pending: list[str] = []

    def _fresh(self, fingerprint: dict[str, Any]) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(json.dumps({"version": VERSION, "fingerprint": fingerprint}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def _load(self, fingerprint: dict[str, Any]) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        try:
            head = json.loads(lines[0])
        except ValueError:
            raise ResumeConflict(f"{self.path} is not a checkpoint of this tool") from None
        if head.get("version") != VERSION or head.get("fingerprint") != fingerprint:
            theirs = head.get("fingerprint") or {}
            changed = sorted(k for k in set(theirs) | set(fingerprint)
                             if theirs.get(k) != fingerprint.get(k))
            raise ResumeConflict(
                f"the unfinished run beside this output used another "
                f"{', '.join(changed) or 'version'}; run again with restart (--restart) to "
                "start over")
        for line in lines[1:]:
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill: it was never committed
            if "window" in entry:
                self.windows[entry["window"]] = entry
                self.window_records = self.window_records or entry["records"]
            elif "dim" in entry:
                self.dim = entry["dim"]
            elif "done" in entry:
                self.done.extend((a, b) for a, b in entry["done"])
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if lines[-1]:  # the kill cut the last line: start the next one on a fresh line
            self._file.write("\n")

    def note_window(self, entry: dict[str, Any]) -> None:
        self.windows[entry["window"]] = entry
        self._pending.append(json.dumps(entry))

    def note_dim(self, dim: int) -> None:
        self.dim = dim
        self._pending.append(json.dumps({"dim": dim}))

    def note_done(self, ranges: list[tuple[int, int]]) -> None:
        self.done.extend(ranges)
        self._pending.append(json.dumps({"done": ranges}))

    def commit(self, data: NpyWriter | None = None) -> None:
        """Make the noted progress durable: the rows first, then the lines that name them."""
        if not self._pending:
            return
        if data is not None:
            data.sync()
        self._file.write("\n".join(self._pending) + "\n")
        self._pending.clear()
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self, *, remove: bool = False) -> None:
        self._file.close()
        if remove:
            os.unlink(self.path)
