"""Records from a file or stdin, as a stream: plain text (a record per line), JSON lines (a
field, dotted paths allowed) or CSV (a column by its header name); gzip-compressed input is
recognised by its magic bytes, so stdin may be compressed too. Memory stays constant for any
input size. The raw bytes read are hashed (SHA-256) and counted as they pass.

Each record comes out as a :class:`Record`: its 1-based line number, its text, or why it is
bad (not UTF-8, not JSON, no such field, a value that is not a string).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from typing import IO, Any, Iterator

__all__ = ["FORMATS", "HashingReader", "Record", "read_records"]

FORMATS = ("text", "jsonl", "csv")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line (CSV: the line the record starts on)
    text: str | None  # None when the record is bad
    bad: str | None = None  # why, when it is


class HashingReader(io.RawIOBase):
    """A binary stream passed through: what is read is counted and hashed (SHA-256)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.size += n
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _open(path: str) -> tuple[HashingReader, IO[bytes]]:
    """(the hashed raw stream, the decompressed binary stream to read records from)."""
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    hashed = HashingReader(raw)
    buffered = io.BufferedReader(hashed, 1 << 20)
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return hashed, gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    return hashed, buffered


def _dig(obj: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise KeyError(part)
    return obj


def _text_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for n, line in enumerate(stream, 1):
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield n, line


def _decode(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_records(path: str, *, format: str = "text", field: str | None = None,
                 column: str | None = None,
                 reader: list[HashingReader] | None = None) -> Iterator[Record]:
    """The records of ``path`` (``-``: stdin) in order. ``reader``, if given, receives the
    :class:`HashingReader` (for the source's size and SHA-256 once read)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "jsonl" and not field:
        raise ValueError("JSON lines need --field (the text's key, dotted paths allowed)")
    if format == "csv" and not column:
        raise ValueError("CSV needs --column (the text's header name)")
    hashed, stream = _open(path)
    if reader is not None:
        reader.append(hashed)
    try:
        if format == "csv":
            yield from _csv_records(stream, column)  # type: ignore[arg-type]
            return
        dotted = (field or "").split(".")
        for n, line in _text_lines(stream):
            text = _decode(line)
            if text is None:
                yield Record(n, None, "not valid UTF-8")
            elif format == "text":
                yield Record(n, text)
            else:
                yield _json_record(n, text, dotted)
    finally:
        stream.close()
        hashed.close()


def _json_record(n: int, text: str, dotted: list[str]) -> Record:
    try:
        obj = json.loads(text)
    except ValueError:
        return Record(n, None, "not a JSON value")
    try:
        value = _dig(obj, dotted)
    except KeyError:
        return Record(n, None, f"no field {'.'.join(dotted)!r}")
    if not isinstance(value, str):
        return Record(n, None, f"field {'.'.join(dotted)!r} is {type(value).__name__}, not a string")
    return Record(n, value)


def _csv_records(stream: IO[bytes], column: str) -> Iterator[Record]:
    # surrogateescape: bytes that are not UTF-8 survive decoding as lone surrogates, so the
    # record holding them is reported bad instead of the whole file failing.
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    rows = csv.reader(text)
    try:
        header = next(rows)
    except StopIteration:
        return
    if column not in header:
        raise ValueError(f"CSV has no column {column!r}; its header: {', '.join(header)[:300]}")
    at = header.index(column)
    start = rows.line_num + 1
    for row in rows:
        line, start = start, rows.line_num + 1
        if at >= len(row):
            yield Record(line, None, f"no column {column!r} in this row")
            continue
        value = row[at]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            yield Record(line, None, "not valid UTF-8")
            continue
        yield Record(line, value)
