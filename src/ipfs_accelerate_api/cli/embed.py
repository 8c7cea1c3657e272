"""``ipfs-accel embed``: the embedding pipeline (:func:`ipfs_accelerate_api.pipelines.embed_file`)
from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import EXIT, add_backend_options, backend_from_args


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="embed every record of a file into a float32 .npy (resumable)",
        description="Embed every record of INPUT (a file, gzip-compressed or not, or - for "
                    "stdin) into OUT.npy (row i = record i) and its OUT.json sidecar, as fast "
                    "as the service allows. Killed at any moment and run again with the same "
                    "arguments, it resumes where it stopped; the output is byte-identical to "
                    "an uninterrupted run.")
    p.add_argument("input", metavar="INPUT", help="a text file (one record per line), JSON "
                                                  "lines (--field) or CSV (--column); - for stdin")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npy",
                   help="the float32 matrix (with --format parquet: OUT.parquet, or OUT.npy "
                        "with OUT.parquet beside it)")
    p.add_argument("--format", choices=("npy", "parquet"), default="npy",
                   help="parquet: also write OUT.parquet (row, line, text, embedding; needs "
                        "the [parquet] extra, pyarrow) once the .npy is complete")
    add_backend_options(p)
    p.add_argument("--field", help="JSON lines: the text's key (dotted paths allowed: a.b.0)")
    p.add_argument("--column", help="CSV: the text's column (by header name)")
    p.add_argument("--normalize", action="store_true", help="unit-length rows (C vector math)")
    p.add_argument("--dimensions", type=int, help="ask the service for vectors of this size")
    p.add_argument("--skip-empty", action="store_true",
                   help="drop empty records (the sidecar lists their lines)")
    p.add_argument("--on-bad-record", choices=("stop", "skip"), default="stop",
                   help="a record that is not UTF-8, or a JSON line without the field: stop "
                        "the run naming its line (default), or skip it (listed in the sidecar)")
    p.add_argument("--restart", action="store_true",
                   help="start over, discarding an unfinished run beside the output")
    p.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


class _Bar:
    """tqdm on stderr over the input's bytes (ETA), rows and retries in the postfix."""

    def __init__(self, total: int | None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr,
                         dynamic_ncols=True, leave=True, smoothing=0.1)
        self._rows = 0

    def __call__(self, c: dict[str, Any]) -> None:
        read = c["rows_read"] or 1
        position = int(c["bytes_read"] * min(1.0, c["rows"] / read))
        self._bar.update(max(0, position - self._bar.n))
        if c["rows"] - self._rows >= 256 or c["rows"] == read:
            self._rows = c["rows"]
            self._bar.set_postfix(rows=c["rows"], retries=c["retries"], **{"429s": c["rate_limited"]},
                                  refresh=False)

    def close(self) -> None:
        self._bar.close()


def _format(args: argparse.Namespace) -> str:
    if args.field and args.column:
        raise SystemExit("ipfs-accel embed: error: --field (JSON lines) and --column (CSV) "
                         "exclude each other")
    return "jsonl" if args.field else "csv" if args.column else "text"


def run(args: argparse.Namespace) -> int:
    import os

    from ..pipelines import embed_file

    fmt = _format(args)
    parquet = _parquet_paths(args)
    params = {} if args.dimensions is None else {"dimensions": args.dimensions}
    command = {k: v for k, v in vars(args).items() if k not in ("func", "debug")}
    ai = backend_from_args(args)
    bar = None
    try:
        if args.progress or sys.stderr.isatty():
            size = os.path.getsize(args.input) if args.input != "-" and os.path.isfile(args.input) else None
            bar = _Bar(size)
        summary = embed_file(args.input, args.output, backend=ai, model=args.model, format=fmt,
                             field=args.field, column=args.column, normalize=args.normalize,
                             skip_empty=args.skip_empty, on_bad_record=args.on_bad_record,
                             params=params, restart=args.restart, progress=bar,
                             command=command)
    finally:
        if bar is not None:
            bar.close()
        ai.close()
    data = summary.as_dict()
    if parquet and not summary.interrupted:
        from ..pipelines.parquet import write_parquet

        write_parquet(args.output, parquet, source=args.input)
        data["parquet"] = parquet
    if args.json:
        print(json.dumps(data, sort_keys=True))
    else:
        tokens = f"{summary.tokens}{' (estimated)' if summary.tokens_estimated else ''}"
        print(f"{'interrupted' if summary.interrupted else 'done'}: {summary.rows} rows "
              f"({summary.embedded} embedded now, {summary.resumed_rows} from before, "
              f"{summary.dropped} dropped) in {summary.seconds:.1f}s, "
              f"{summary.rows_per_s:.0f} rows/s; {tokens} tokens, {summary.requests} requests, "
              f"{summary.retries} retries, {summary.rate_limited} 429s, "
              f"{summary.breaker_trips} breaker trips -> {summary.output}"
              f"{' and ' + data['parquet'] if data.get('parquet') else ''}")
    if summary.interrupted:
        print("ipfs-accel embed: interrupted; run the same command again to resume",
              file=sys.stderr)
        return EXIT["interrupted"]
    return EXIT["ok"]


def _parquet_paths(args: argparse.Namespace) -> str | None:
    """With --format parquet: the Parquet path (``args.output`` becomes the .npy beside it),
    after checking that it can be written; None otherwise."""
    if args.format != "parquet":
        return None
    from ..pipelines.parquet import check_parquet

    if args.input == "-":
        raise SystemExit("ipfs-accel embed: error: --format parquet needs INPUT to be a file "
                         "(its text is read again for the text column)")
    check_parquet()
    out: str = args.output
    if out.endswith(".parquet"):
        args.output = out.removesuffix(".parquet") + ".npy"
        return out
    return out.removesuffix(".npy") + ".parquet"
