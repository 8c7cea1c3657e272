"""Parquet output: an embedded matrix (``OUT.npy`` and its ``OUT.json`` sidecar) written
again as a Parquet file with each record's text beside its vector (needs the ``[parquet]``
extra, pyarrow).

    from ipfs_accelerate_api.pipelines.parquet import write_parquet
    write_parquet("vectors.npy", "vectors.parquet", source="corpus.txt")

Columns: ``row`` (int64), ``line`` (the record's 1-based line in the source, int64),
``text`` (string) and ``embedding`` (``fixed_size_list<float32>[dimension]``); the sidecar
travels in the schema's metadata under ``ipfs_accelerate_api``. The matrix is memory-mapped
and the source read as a stream, one row group at a time, so memory stays constant.

:func:`embedded_records` pairs the rows of a matrix with the source records they were made
from (skipping the records the sidecar lists as dropped); ``ipfs-accel search --text`` uses
it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from ..errors import ConfigurationError, InputError
from .records import HashingReader, Record, read_records

__all__ = ["ROWS_PER_GROUP", "embedded_records", "read_sidecar", "write_parquet"]

#: Rows per Parquet row group (and per read of the matrix).
ROWS_PER_GROUP = 8192
#: The schema metadata key holding the sidecar.
METADATA_KEY = b"ipfs_accelerate_api"


def sidecar_path(npy: str) -> str:
    return (npy.removesuffix(".npy")) + ".json"


def read_sidecar(npy: str) -> dict[str, Any]:
    """The ``OUT.json`` that ``embed_file`` wrote beside ``npy``; :class:`InputError` when it
    is missing or is not one."""
    path = sidecar_path(npy)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"no sidecar {path} beside {npy} (ipfs-accel embed writes one; "
                         "it says which model and input made the vectors)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the sidecar {path}: {exc}") from None
    if not isinstance(data, dict) or "backend" not in data:
        raise InputError(f"{path} is not a sidecar written by ipfs-accel embed")
    return data


def embedded_records(path: str, sidecar: Mapping[str, Any], *, reader: list[HashingReader] | None = None
                     ) -> Generator[tuple[int, Record], None, None]:
    """``(row, record)`` for each record of ``path`` that became a row, in row order: read
    with the sidecar's input format, field and column, the records it lists as dropped
    skipped. A source whose size is not the sidecar's, or a bad record it does not list, is
    not the embedded input: :class:`InputError`."""
    source = sidecar.get("source") or {}
    size = source.get("size")
    if size is not None and path != "-" and os.path.isfile(path) and os.path.getsize(path) != size:
        raise InputError(f"{path} is {os.path.getsize(path)} bytes; the input these vectors "
                         f"were made from was {size}: not the embedded input", source=path)
    fmt = sidecar.get("input") or {}
    dropped = {d["line"] for d in sidecar.get("dropped") or []}
    row = 0
    for rec in read_records(path, format=fmt.get("format") or "text", field=fmt.get("field"),
                            column=fmt.get("column"), reader=reader):
        if rec.line in dropped:
            continue
        if rec.text is None:
            raise InputError(f"{path}, line {rec.line}: {rec.bad}, and the sidecar does not "
                             "list it as dropped: not the embedded input", line=rec.line,
                             source=path)
        yield row, rec
        row += 1


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa  # type: ignore[import-not-found, unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ConfigurationError("Parquet output needs pyarrow: pip install "
                                 "'ipfs-accelerate-api[parquet]'") from None
    return pa, pq


def check_parquet() -> None:
    """:class:`ConfigurationError` unless pyarrow can be imported (check before a long run)."""
    _pyarrow()


def write_parquet(npy: str, out: str, *, source: str | None = None,
                  rows_per_group: int = ROWS_PER_GROUP, compression: str = "zstd") -> int:
    """Write ``out`` (Parquet) from ``npy`` and its sidecar, the text of each row read from
    ``source`` (default: the sidecar's source path); the rows written. The source must be
    the embedded input (its size and SHA-256 are checked against the sidecar's). Written
    to ``out + ".tmp"`` and renamed, so ``out`` is whole or absent."""
    pa, pq = _pyarrow()
    meta = read_sidecar(npy)
    source = source or (meta.get("source") or {}).get("path")
    if not source or source == "-":
        raise InputError("the text column needs the embedded input as a file (stdin cannot "
                         "be read again)")
    matrix = np.load(npy, mmap_mode="r")
    if matrix.ndim != 2 or matrix.shape[0] != meta.get("count", matrix.shape[0]):
        raise InputError(f"{npy} ({matrix.shape}) does not match its sidecar")
    dim = matrix.shape[1]
    schema = pa.schema([("row", pa.int64()), ("line", pa.int64()), ("text", pa.string()),
                        ("embedding", pa.list_(pa.float32(), dim))],
                       metadata={METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    tmp = out + ".tmp"
    reader: list[HashingReader] = []
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression=compression) as writer:
            group: list[Record] = []

            def flush() -> None:
                nonlocal rows
                block = np.ascontiguousarray(matrix[rows:rows + len(group)], dtype=np.float32)
                if len(block) != len(group):
                    raise InputError(f"{source} has more records than {npy} has rows: not "
                                     "the embedded input", source=source)
                vectors = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), dim)
                writer.write_batch(pa.record_batch(
                    [pa.array(np.arange(rows, rows + len(group), dtype=np.int64)),
                     pa.array([r.line for r in group], pa.int64()),
                     pa.array([r.text for r in group], pa.string()), vectors], schema=schema))
                rows += len(group)
                group.clear()

            for _, rec in embedded_records(source, meta, reader=reader):
                group.append(rec)
                if len(group) >= rows_per_group:
                    flush()
            if group:
                flush()
        if rows != matrix.shape[0]:
            raise InputError(f"{source} has {rows} records to {npy}'s {matrix.shape[0]} rows: "
                             "not the embedded input", source=source)
        want = (meta.get("source") or {}).get("sha256")
        if want and reader and reader[0].sha256.hexdigest() != want:
            raise InputError(f"{source} changed since it was embedded (its SHA-256 is not the "
                             "sidecar's)", source=source)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows
