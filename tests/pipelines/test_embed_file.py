"""The embedding pipeline from Python (:mod:`ipfs_accelerate_api.pipelines`) against the
emulator's TEI: every input format, gzip, bad records, resume and refusals, 429s adapted to,
and ``embed_iter``."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

from ipfs_accelerate_api import RetryPolicy, backend
from ipfs_accelerate_api.emulator import FaultPlan
from ipfs_accelerate_api.errors import InputError, ResumeConflict, ServerError
from ipfs_accelerate_api.pipelines import embed_file, embed_iter
from ipfs_accelerate_api.pipelines import embed as embed_mod

from .conftest import BATCH, DIM, embed_requests, expected

TEXTS = [f"record number {i} about {'cats' if i % 3 else 'dogs'}" for i in range(300)]


def write_text(path, texts, *, compress: bool = False) -> str:
    data = ("\n".join(texts) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def run(tmp_path, source: str, tei_url: str, **kw):
    out = str(tmp_path / "out.npy")
    summary = embed_file(source, out, backend="tei", base_url=tei_url, **kw)
    return summary, np.load(out), json.loads((tmp_path / "out.json").read_text())


@pytest.mark.parametrize("compress", [False, True])
def test_text_lines_in_order_in_the_fewest_requests(tmp_path, emu, tei_url, compress) -> None:
    src = write_text(tmp_path / ("in.txt.gz" if compress else "in.txt"), TEXTS, compress=compress)
    summary, matrix, sidecar = run(tmp_path, src, tei_url)
    assert matrix.dtype == np.float32 and matrix.shape == (len(TEXTS), DIM)
    np.testing.assert_allclose(matrix, expected(TEXTS), rtol=1e-6)
    assert embed_requests(emu) == -(-len(TEXTS) // BATCH)  # the packer's minimum
    assert (summary.rows, summary.embedded, summary.resumed_rows) == (300, 300, 0)
    assert sidecar["count"] == 300 and sidecar["dimension"] == DIM
    assert sidecar["backend"] == "tei" and sidecar["normalized"] is False
    raw = (tmp_path / ("in.txt.gz" if compress else "in.txt")).read_bytes()
    import hashlib
    assert sidecar["source"]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert sidecar["source"]["size"] == len(raw)
    assert not (tmp_path / "out.npy.ckpt").exists() and not (tmp_path / "out.npy.partial").exists()


def test_json_lines_with_a_dotted_field(tmp_path, emu, tei_url) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"doc": {"body": [t]}, "id": i}) + "\n"
                           for i, t in enumerate(TEXTS[:50])))
    _, matrix, sidecar = run(tmp_path, str(src), tei_url, format="jsonl", field="doc.body.0")
    np.testing.assert_allclose(matrix, expected(TEXTS[:50]), rtol=1e-6)
    assert sidecar["input"]["field"] == "doc.body.0"


def test_csv_by_column_with_quoted_newlines(tmp_path, emu, tei_url) -> None:
    texts = ["plain", "with, a comma", "two\nlines", 'a "quote"']
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows([i, t] for i, t in enumerate(texts))
    _, matrix, _ = run(tmp_path, str(src), tei_url, format="csv", column="text")
    np.testing.assert_allclose(matrix, expected(texts), rtol=1e-6)


def test_empty_records_embed_or_are_dropped_and_listed(tmp_path, emu, tei_url) -> None:
    src = write_text(tmp_path / "in.txt", ["a", "", "b", ""])
    _, matrix, _ = run(tmp_path, src, tei_url)
    np.testing.assert_allclose(matrix, expected(["a", "", "b", ""]), rtol=1e-6)
    summary, matrix, sidecar = run(tmp_path, src, tei_url, skip_empty=True, restart=True)
    np.testing.assert_allclose(matrix, expected(["a", "b"]), rtol=1e-6)
    assert sidecar["dropped"] == [{"line": 2, "reason": "empty"}, {"line": 4, "reason": "empty"}]
    assert summary.dropped == 2


def test_a_bad_record_stops_the_run_naming_its_line(tmp_path, emu, tei_url) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"good\nalso good\n\xff\xfebad\nafter\n")
    with pytest.raises(InputError, match="line 3: not valid UTF-8") as info:
        run(tmp_path, str(src), tei_url)
    assert info.value.line == 3
    summary, matrix, sidecar = run(tmp_path, str(src), tei_url, on_bad_record="skip",
                                   restart=True)
    np.testing.assert_allclose(matrix, expected(["good", "also good", "after"]), rtol=1e-6)
    assert sidecar["dropped"] == [{"line": 3, "reason": "not valid UTF-8"}]


def test_json_line_without_the_field(tmp_path, emu, tei_url) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"t": "x"}\n{"other": 1}\n{"t": 5}\nnot json\n')
    with pytest.raises(InputError, match="line 2: no field 't'"):
        run(tmp_path, str(src), tei_url, format="jsonl", field="t")
    _, matrix, sidecar = run(tmp_path, str(src), tei_url, format="jsonl", field="t",
                             on_bad_record="skip", restart=True)
    assert matrix.shape == (1, DIM)
    assert [d["line"] for d in sidecar["dropped"]] == [2, 3, 4]


def test_an_unfinished_run_resumes_without_resending_finished_rows(tmp_path, emu, tei_url,
                                                                   monkeypatch) -> None:
    """A run stopped by a failure keeps its finished batches; the next run sends only the
    rest, and the output equals an uninterrupted run's, byte for byte."""
    monkeypatch.setattr(embed_mod, "WINDOW_RECORDS", 64)  # several windows
    monkeypatch.setattr(embed_mod, "COMMIT_EVERY", 0.0)
    src = write_text(tmp_path / "in.txt", TEXTS)
    # the service's 6th request (/info, then the 5th embed) fails, and is not retried: the
    # run stops there, with four batches done
    emu.config("tei").faults = FaultPlan(script=[None] * 5 + ["500"])
    with pytest.raises(ServerError):
        embed_file(src, str(tmp_path / "out.npy"), backend="tei", base_url=tei_url,
                   max_concurrency=1, max_in_flight=1,
                   retry=RetryPolicy(max_retries=0))
    assert (tmp_path / "out.npy.ckpt").exists() and not (tmp_path / "out.npy").exists()
    emu.config("tei").faults = FaultPlan()
    sent_before = embed_requests(emu)
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    embed_file(src, str(ref_dir / "out.npy"), backend="tei", base_url=tei_url)
    summary = embed_file(src, str(tmp_path / "out.npy"), backend="tei", base_url=tei_url)
    assert summary.resumed_rows == 4 * BATCH and summary.embedded == len(TEXTS) - 4 * BATCH
    assert (tmp_path / "out.npy").read_bytes() == (ref_dir / "out.npy").read_bytes()
    assert sent_before == 5


def test_a_changed_input_or_option_is_refused(tmp_path, emu, tei_url, monkeypatch) -> None:
    monkeypatch.setattr(embed_mod, "WINDOW_RECORDS", 64)
    monkeypatch.setattr(embed_mod, "COMMIT_EVERY", 0.0)
    src = tmp_path / "in.txt"
    write_text(src, TEXTS)
    emu.config("tei").faults = FaultPlan(script=[None] * 3 + ["500"])
    with pytest.raises(ServerError):
        embed_file(str(src), str(tmp_path / "out.npy"), backend="tei", base_url=tei_url,
                   max_concurrency=1, max_in_flight=1,
                   retry=RetryPolicy(max_retries=0))
    emu.config("tei").faults = FaultPlan()
    with pytest.raises(ResumeConflict, match="normalize"):
        embed_file(str(src), str(tmp_path / "out.npy"), backend="tei", base_url=tei_url,
                   normalize=True)
    write_text(src, ["changed"] + TEXTS[1:])  # another size: refused at once
    with pytest.raises(ResumeConflict, match="restart"):
        embed_file(str(src), str(tmp_path / "out.npy"), backend="tei", base_url=tei_url)
    data = src.read_bytes()
    src.write_bytes(b"X" + data[1:])  # same size, other content: the window's hash differs
    with pytest.raises(ResumeConflict):
        embed_file(str(src), str(tmp_path / "out.npy"), backend="tei", base_url=tei_url)
    summary = embed_file(str(src), str(tmp_path / "out.npy"), backend="tei", base_url=tei_url,
                         restart=True)
    assert summary.resumed_rows == 0 and summary.rows == len(TEXTS)


def test_over_capacity_the_run_adapts_and_loses_nothing(tmp_path, emu, tei_url) -> None:
    emu.config("tei").capacity = 2
    emu.config("tei").latency = 0.01
    src = write_text(tmp_path / "in.txt", TEXTS)
    summary, matrix, _ = run(tmp_path, src, tei_url, max_concurrency=8)
    np.testing.assert_allclose(matrix, expected(TEXTS), rtol=1e-6)
    assert summary.rate_limited > 0  # it met the limit, and went on


def test_normalize_on_the_client(tmp_path, emu, tei_url) -> None:
    src = write_text(tmp_path / "in.txt", TEXTS[:40])
    _, matrix, sidecar = run(tmp_path, src, tei_url, normalize=True, params={"normalize": False})
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
    assert sidecar["normalized"] is True


def test_embed_iter_yields_every_row_once(emu, tei_url) -> None:
    with backend("tei", base_url=tei_url, max_concurrency=4) as ai:
        blocks = list(embed_iter(iter(TEXTS), backend=ai, window=50))
    rows = sorted((r, b) for r, b in blocks)
    assert [r for r, _ in rows] == sorted({r for r, _ in rows})
    matrix = np.vstack([b for _, b in rows])
    np.testing.assert_allclose(matrix, expected(TEXTS), rtol=1e-6)


def test_embed_iter_refuses_a_non_string(emu, tei_url) -> None:
    with pytest.raises(TypeError, match="item 1"):
        list(embed_iter(["a", 3], backend="tei", base_url=tei_url))
    assert embed_requests(emu) == 0


def test_progress_counts_rows_retries_and_429s(tmp_path, emu, tei_url) -> None:
    src = write_text(tmp_path / "in.txt", TEXTS)
    emu.config("tei").faults = FaultPlan(script=[None, "503", "429"])  # /info, then two embeds
    seen: list[dict] = []
    summary, _, _ = run(tmp_path, src, tei_url, progress=seen.append, max_concurrency=1)
    assert [c["rows"] for c in seen] == sorted(c["rows"] for c in seen)
    last = seen[-1]
    assert last["rows"] == len(TEXTS) and last["rows_read"] == len(TEXTS)
    assert last["retries"] == summary.retries == 2 and last["rate_limited"] == 1
    assert last["bytes_read"] == (tmp_path / "in.txt").stat().st_size
