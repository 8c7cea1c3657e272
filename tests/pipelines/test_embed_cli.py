"""``ipfs-accel embed`` end to end in subprocesses against the emulator's TEI: killed with
SIGKILL at several points and run again, the output is byte-identical to an uninterrupted
run and no finished batch is sent again; stdin, gzip, ``--json``, refusals and exit codes."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import BATCH, DIM, cli, embed_requests, expected

N = 20_000  # three windows of 8,192 records
LINES = [f"line {i}: {'alpha' if i % 2 else 'beta'} {i * 7 % 101}" for i in range(N)]


@pytest.fixture
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n")
    return str(path)


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def done_ranges(ckpt: str) -> list[tuple[int, int]]:
    out = []
    with open(ckpt, encoding="utf-8") as f:
        lines = f.read().split("\n")[1:]
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line the kill cut: not committed
        out.extend(tuple(r) for r in entry.get("done", []))
    return out


def pending_requests(done: list[tuple[int, int]], rows: int, window: int = 8192) -> int:
    """Requests the resumed run must send: each run of rows not done, per window, packed
    in batches of BATCH."""
    covered = np.zeros(rows, bool)
    for a, b in done:
        covered[a:b] = True
    total = 0
    for w in range(0, rows, window):
        seg = ~covered[w:w + window]
        # lengths of the runs of True in seg
        padded = np.concatenate([[False], seg, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        total += sum(math.ceil((b - a) / BATCH) for a, b in zip(edges[::2], edges[1::2]))
    return total


def stop_after_commit(proc, out: str, groups: int = 1, sig=signal.SIGKILL) -> None:
    """Signal ``proc`` once the checkpoint beside ``out`` names ``groups`` committed groups of
    finished batches (0: as soon as the run has started writing)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(out + ".partial"):
            with open(out + ".ckpt") as f:
                if f.read().count('"done"') >= groups:
                    break
        time.sleep(0.005)
    proc.send_signal(sig)


@pytest.fixture
def reference(tmp_path_factory, corpus, tei_url) -> str:
    out = str(tmp_path_factory.mktemp("ref") / "ref.npy")
    r = cli("embed", corpus, "-o", out, "--backend", "tei", "--base-url", tei_url)
    assert r.returncode == 0, r.stderr.decode()
    return out


def test_an_uninterrupted_run_writes_the_vectors_and_sidecar(emu, reference) -> None:
    matrix = np.load(reference)
    assert matrix.shape == (N, DIM)
    np.testing.assert_allclose(matrix[:100], expected(LINES[:100]), rtol=1e-6)
    np.testing.assert_allclose(matrix[-5:], expected(LINES[-5:]), rtol=1e-6)
    sidecar = json.loads(Path(reference[:-4] + ".json").read_text())
    assert sidecar["count"] == N and sidecar["options"]["backend"] == "tei"
    assert embed_requests(emu) == math.ceil(8192 / BATCH) * 2 + math.ceil((N - 2 * 8192) / BATCH)


@pytest.mark.parametrize("kill_after", [0, 1, 3])
def test_killed_and_run_again_resumes_byte_identical(tmp_path, emu, tei_url, corpus, reference,
                                                     kill_after) -> None:
    """SIGKILL once the checkpoint names ``kill_after`` committed groups of batches, then the
    same command again."""
    emu.config("tei").latency = 0.01  # slow enough to be caught mid-run
    out = str(tmp_path / "out.npy")
    ckpt = out + ".ckpt"
    args = [sys.executable, "-m", "ipfs_accelerate_api.cli", "embed", corpus, "-o", out,
            "--backend", "tei", "--base-url", tei_url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop_after_commit(proc, out, kill_after)
    proc.wait()
    assert not os.path.exists(out), "killed before the end: no final output yet"
    done = done_ranges(ckpt)
    assert len(done) >= kill_after
    expected_requests = pending_requests(done, N)
    emu.config("tei").latency = 0.0
    before = embed_requests(emu)
    r = cli("embed", corpus, "-o", out, "--backend", "tei", "--base-url", tei_url, "--json")
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)
    assert summary["rows"] == N and summary["resumed_rows"] == sum(b - a for a, b in done)
    assert summary["embedded"] == N - summary["resumed_rows"]
    assert embed_requests(emu) - before == expected_requests  # nothing finished sent again
    assert sha(out) == sha(reference)
    assert not os.path.exists(ckpt) and not os.path.exists(out + ".partial")


def test_stdin_and_gzip_give_the_same_vectors(tmp_path, emu, tei_url) -> None:
    data = ("\n".join(LINES[:500]) + "\n").encode()
    r = cli("embed", "-", "-o", str(tmp_path / "a.npy"), "--backend", "tei", "--base-url",
            tei_url, stdin=gzip.compress(data))
    assert r.returncode == 0, r.stderr.decode()
    (tmp_path / "b.txt").write_bytes(data)
    r = cli("embed", str(tmp_path / "b.txt"), "-o", str(tmp_path / "b.npy"), "--backend", "tei",
            "--base-url", tei_url)
    assert r.returncode == 0
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar["source"]["path"] == "-"
    assert sidecar["source"]["sha256"] == hashlib.sha256(gzip.compress(data)).hexdigest() or \
        sidecar["source"]["size"] > 0


def test_json_summary_and_human_summary(tmp_path, emu, tei_url) -> None:
    (tmp_path / "in.txt").write_text("a\nb\nc\n")
    r = cli("embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "--backend",
            "tei", "--base-url", tei_url, "--json")
    summary = json.loads(r.stdout)
    assert {"rows", "seconds", "rows_per_s", "tokens", "requests", "retries", "rate_limited",
            "breaker_trips"} <= set(summary) and summary["rows"] == 3
    r = cli("embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "p.npy"), "--backend",
            "tei", "--base-url", tei_url)
    assert r.returncode == 0 and b"done: 3 rows" in r.stdout


def test_exit_codes_and_one_line_errors(tmp_path, emu, tei_url) -> None:
    (tmp_path / "in.txt").write_bytes(b"ok\n\xff\n")
    (tmp_path / "good.txt").write_bytes(b"ok\n")
    outs = iter(str(tmp_path / f"o{i}.npy") for i in range(10))
    cases = [
        (["embed", str(tmp_path / "missing.txt"), "-o", next(outs), "--backend", "tei", "--base-url",
          tei_url], 1, b"missing.txt"),
        (["embed", str(tmp_path / "in.txt"), "-o", next(outs), "--backend", "tei", "--base-url",
          tei_url], 1, b"line 2: not valid UTF-8"),
        (["embed", str(tmp_path / "good.txt"), "-o", next(outs), "--backend", "tei", "--base-url",
          "http://127.0.0.1:9/tei"], 4, b"cannot connect"),
        (["embed", str(tmp_path / "in.txt"), "-o", next(outs), "--backend", "openai",
          "--model", "text-embedding-3-small"], 3, b"OPENAI_API_KEY"),
        (["embed", str(tmp_path / "in.txt"), "--backend", "tei"], 2, b"-o"),
        (["embed", str(tmp_path / "in.txt"), "-o", next(outs), "--backend", "nope"], 3, b"unknown backend"),
    ]
    for args, code, text in cases:
        r = cli(*args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert text in r.stderr and b"Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith(b"ipfs-accel embed: error: ")
        assert len(lines) == 1 or code == 2  # one line; a usage error also shows the usage


def test_a_changed_input_is_refused_until_restart(tmp_path, emu, tei_url, corpus) -> None:
    out = str(tmp_path / "out.npy")
    emu.config("tei").latency = 0.01
    proc = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate_api.cli", "embed", corpus,
                             "-o", out, "--backend", "tei", "--base-url", tei_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop_after_commit(proc, out)
    proc.wait()
    emu.config("tei").latency = 0.0
    with open(corpus, "a") as f:
        f.write("one more line\n")
    r = cli("embed", corpus, "-o", out, "--backend", "tei", "--base-url", tei_url)
    assert r.returncode == 1 and b"--restart" in r.stderr
    r = cli("embed", corpus, "-o", out, "--backend", "tei", "--base-url", tei_url, "--restart")
    assert r.returncode == 0, r.stderr
    assert np.load(out).shape == (N + 1, DIM)


def test_ctrl_c_stops_cleanly_with_a_checkpoint(tmp_path, emu, tei_url, corpus, reference) -> None:
    emu.config("tei").latency = 0.01
    out = str(tmp_path / "out.npy")
    proc = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate_api.cli", "embed", corpus,
                             "-o", out, "--backend", "tei", "--base-url", tei_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop_after_commit(proc, out, sig=signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert b"interrupted" in stdout and b"run the same command again" in stderr
    assert b"Traceback" not in stderr
    emu.config("tei").latency = 0.0
    r = cli("embed", corpus, "-o", out, "--backend", "tei", "--base-url", tei_url, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["resumed_rows"] > 0
    assert sha(out) == sha(reference)
