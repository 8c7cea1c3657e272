"""``ipfs-accel search``: the rows of an embedded matrix nearest to some queries.

The matrix is memory-mapped and ranked in chunks of rows with the C ``top_k`` (cosine), so
memory stays constant whatever its size. The sidecar ``OUT.json`` that ``ipfs-accel embed``
wrote beside it says which backend, model and options made the vectors; the queries are
embedded the same way, and a ``--backend`` or ``--model`` that contradicts it is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from . import EXIT, add_backend_options, backend_from_args

__all__ = ["CHUNK_ROWS", "add", "rank", "run"]

#: Rows of the matrix ranked at once (one chunk is read from the memory map at a time).
CHUNK_ROWS = 65536


def add(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "search", help="the rows of an embedded .npy nearest to a query (cosine, C top_k)",
        description="Embed the queries the way OUT.npy was embedded (its OUT.json sidecar "
                    "names the backend, model and options) and print, for each, the k rows "
                    "with the highest cosine similarity and their scores (with --text INPUT, "
                    "each row's record too). Without --base-url the sidecar's URL is used.")
    p.add_argument("index", metavar="OUT.npy", help="a matrix written by ipfs-accel embed")
    p.add_argument("--query", "-q", action="append", default=[], metavar="TEXT",
                   help="a query (repeat for several)")
    p.add_argument("--queries", metavar="FILE", help="queries, one a line (- for stdin)")
    p.add_argument("-k", type=int, default=10, help="rows per query (default 10)")
    p.add_argument("--text", metavar="INPUT",
                   help="the file that was embedded: print each row's record beside it")
    add_backend_options(p, backend_required=False)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


class SearchError(Exception):
    """A search that cannot be done as asked (exit 1, one line)."""


def _matrix(index: str, meta: dict[str, Any]) -> np.ndarray:
    try:
        matrix: np.ndarray = np.load(index, mmap_mode="r")
    except FileNotFoundError:
        raise SearchError(f"no such file: {index}") from None
    except (OSError, ValueError) as exc:
        raise SearchError(f"{index} is not a .npy matrix: {exc}") from None
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise SearchError(f"{index} holds a {matrix.ndim}-D {matrix.dtype} array; "
                          "expected rows of float32 (ipfs-accel embed writes those)")
    count, dim = meta.get("count"), meta.get("dimension")
    if (count is not None and count != matrix.shape[0]) or (dim and dim != matrix.shape[1]):
        raise SearchError(f"{index} is {matrix.shape[0]} x {matrix.shape[1]} but its sidecar "
                          f"says {count} x {dim}: they do not belong together")
    if matrix.shape[0] == 0:
        raise SearchError(f"{index} has no rows")
    return matrix


def _check_agrees(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    from .keys import backend_class

    made_by = meta["backend"]
    if args.backend is None:
        args.backend = made_by
    if backend_class(args.backend).name != made_by:  # type: ignore[attr-defined]
        raise SearchError(f"the vectors were made by {made_by} (sidecar); --backend "
                          f"{args.backend} would embed the queries differently")
    if args.model is not None and args.model != meta.get("model"):
        made = meta.get("model")
        raise SearchError(f"the vectors were made with model {made!r} (sidecar); --model "
                          f"{args.model!r} would embed the queries differently"
                          if made else
                          f"the vectors were made with the service's own model (the sidecar "
                          f"names none); --model {args.model!r} may differ: leave it out")


def _queries(args: argparse.Namespace) -> list[str]:
    queries = list(args.query)
    if args.queries:
        if args.queries == "-":
            queries += [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        else:
            with open(args.queries, encoding="utf-8") as fh:
                queries += [line.rstrip("\r\n") for line in fh if line.strip()]
    return queries


def rank(queries: np.ndarray, matrix: np.ndarray, k: int, *,
         normalized: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``matrix`` with the highest cosine to each query: ``(scores, rows)``,
    best first, equal scores by lower row. ``matrix`` may be a memory map: it is read
    :data:`CHUNK_ROWS` rows at a time; ``normalized`` says its rows are unit length already
    (then a dot product is the cosine and nothing is recomputed)."""
    from ..core import l2_normalize, top_k

    q = l2_normalize(np.ascontiguousarray(queries, dtype=np.float32))
    k = min(k, matrix.shape[0])
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, matrix.shape[0], CHUNK_ROWS):
        chunk = matrix[start:start + CHUNK_ROWS]
        s, i = top_k(q, chunk, min(k, len(chunk)), normalized=normalized)
        # Earlier chunks' rows come first, so a stable sort keeps equal scores by lower row.
        pool_s = np.concatenate([best_s, s.astype(np.float32, copy=False)], axis=1)
        pool_i = np.concatenate([best_i, i + start], axis=1)
        order = np.argsort(-pool_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(pool_s, order, axis=1)
        best_i = np.take_along_axis(pool_i, order, axis=1)
    return best_s, best_i


def _records(path: str, meta: dict[str, Any], wanted: set[int]) -> dict[int, tuple[int, str]]:
    """``{row: (line, text)}`` for the wanted rows, read from the embedded input."""
    from ..pipelines import Record
    from ..pipelines.parquet import embedded_records

    found: dict[int, tuple[int, str]] = {}
    last = max(wanted)
    records: Generator[tuple[int, Record], None, None] = embedded_records(path, meta)
    try:
        for row, rec in records:
            if row in wanted:
                found[row] = (rec.line, rec.text)  # type: ignore[assignment]
            if row == last:
                break
    finally:
        records.close()
    if len(found) < len(wanted):
        raise SearchError(f"{path} has fewer records than the matrix has rows: --text must "
                          "name the embedded input")
    return found


def _hits(queries: list[str], scores: np.ndarray, rows: np.ndarray,
          texts: dict[int, tuple[int, str]] | None) -> Iterator[dict[str, Any]]:
    for query, s_row, i_row in zip(queries, scores, rows):
        hits = []
        for rank_, (score, row) in enumerate(zip(s_row.tolist(), i_row.tolist()), 1):
            hit: dict[str, Any] = {"rank": rank_, "row": row, "score": score}
            if texts is not None:
                hit["line"], hit["text"] = texts[row]
            hits.append(hit)
        yield {"query": query, "hits": hits}


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        print("ipfs-accel search: error: -k must be at least 1", file=sys.stderr)
        return EXIT["usage"]
    from ..pipelines.parquet import read_sidecar

    meta = read_sidecar(args.index)
    _check_agrees(args, meta)
    queries = _queries(args)
    if not queries:
        print("ipfs-accel search: error: give a query (--query TEXT or --queries FILE)",
              file=sys.stderr)
        return EXIT["usage"]
    matrix = _matrix(args.index, meta)
    extra = {} if args.base_url or not meta.get("base_url") else {"base_url": meta["base_url"]}
    ai = backend_from_args(args, **extra)
    try:
        vectors = ai.embed(queries, model=meta.get("model"), **(meta.get("params") or {}))
    finally:
        ai.close()
    if vectors.shape[1] != matrix.shape[1]:
        raise SearchError(f"the queries embed to {vectors.shape[1]} dimensions, the matrix has "
                          f"{matrix.shape[1]}: not the model that made it")
    scores, rows = rank(vectors, matrix, args.k, normalized=bool(meta.get("normalized")))
    texts = _records(args.text, meta, set(rows.ravel().tolist())) if args.text else None
    results = list(_hits(queries, scores, rows, texts))
    if args.json:
        print(json.dumps({"index": args.index, "backend": meta["backend"],
                          "model": meta.get("model"), "k": int(rows.shape[1]),
                          "results": results}, ensure_ascii=False))
        return EXIT["ok"]
    for n, result in enumerate(results):
        if n:
            print()
        print(f"query: {result['query']}")
        for hit in result["hits"]:
            text = f"  {_one_line(hit['text'])}" if "text" in hit else ""
            print(f"{hit['rank']:>4}  row {hit['row']:<8} {hit['score']:.4f}{text}")
    return EXIT["ok"]


def _one_line(text: str, width: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"
