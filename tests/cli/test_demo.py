"""``ipfs-accel demo``: end to end in a subprocess (``--quick``), the bundled corpus, the
accounting that decides the exit code. No timing is asserted."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from importlib import resources

import numpy as np
import pytest

from ipfs_accelerate_api.demo import CORPUS, DemoPlan, corpus_lines, run_demo
from ipfs_accelerate_api.demo._ledger import Ledger, table
from ipfs_accelerate_api.errors import CircuitOpenError, ServerError

BACKENDS = ("tei", "openai", "claude", "gemini", "groq", "ollama")
#: Keys and URLs a user may have set: the demo must not use or print any of them.
DECOYS = {
    "OPENAI_API_KEY": "sk-decoy-openai-0001", "ANTHROPIC_API_KEY": "sk-ant-decoy-0002",
    "GEMINI_API_KEY": "decoy-gemini-0003", "GROQ_API_KEY": "gsk_decoy_0004",
    "OLLAMA_API_KEY": "decoy-ollama-0005", "HF_TEI_API_KEY": "hf_decoy_0006",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/decoy", "HF_TEI_API_URL": "http://127.0.0.1:9/decoy",
}
TIMEOUT = 240


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m ipfs_accelerate_api.cli ARGS`` in a subprocess, with this interpreter
    and this process's environment (``IPFS_ACCEL_NO_EXTENSIONS`` and the path included)."""
    return subprocess.run([sys.executable, "-m", "ipfs_accelerate_api.cli", *args], check=False,
                          capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``demo --quick --keep DIR`` run, with decoy keys in the environment and a home
    directory of its own (so no credentials file either)."""
    home = tmp_path_factory.mktemp("home")
    keep = tmp_path_factory.mktemp("keep") / "out"
    proc = _cli("demo", "--quick", "--keep", str(keep),
                env={**DECOYS, "HOME": str(home), "PYTHONIOENCODING": "utf-8"})
    return proc, keep


def _table(stdout: str) -> dict[str, dict[str, str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("backend "))
    head = [h for h in lines[start].replace("429s seen", "429s_seen")
            .replace("breaker trips", "breaker_trips").split()]
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = line.replace(" ms", "ms").split()
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def test_quick_demo_exits_0_with_every_phase(quick) -> None:
    proc, _ = quick
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for phase in ("emulator: http://127.0.0.1:", "embed: 1,000 rows x 384 through TEI",
                  "chat: 40 requests to 5 backends", "claude claude-sonnet-4-5 (HIGH",
                  "outage 1/3", "breaker OPEN", "outage 2/3", "failed fast with CircuitOpenError",
                  "outage 3/3", "CLOSED", "search: top 3 of 1,000 rows",
                  "equal to a brute-force ranking", "check: ", "OK: every request accounted for"):
        assert phase in out, f"missing {phase!r} in:\n{out}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "LOST" not in out and "FAILED" not in out


def test_quick_demo_table_has_every_backend(quick) -> None:
    proc, _ = quick
    rows = _table(proc.stdout)
    assert set(rows) == set(BACKENDS)
    for name, row in rows.items():
        assert int(row["requests"].replace(",", "")) > 0, name
        assert row["p50"].endswith("ms") and row["p99"].endswith("ms"), row
        assert row["tokens"] != "0", name
    assert int(rows["openai"]["breaker_trips"]) >= 1  # the outage
    assert int(rows["openai"]["failed"]) >= 1
    for name in ("tei", "claude", "gemini", "groq", "ollama"):
        assert rows[name]["failed"] == "0", rows[name]


def test_quick_demo_search_finds_the_query_row(quick) -> None:
    proc, _ = quick
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("search: "))
    query = lines[at + 1].split("query: ", 1)[1]
    first = lines[at + 2].split()
    assert first[:2] == ["1.", "row"] and first[3] == "1.000"
    assert lines[at + 2].endswith(query)
    assert sum(1 for line in lines[at + 2:at + 5] if line.lstrip()[:2] in ("1.", "2.", "3.")) == 3


def test_quick_demo_uses_no_key_or_url_from_the_environment(quick) -> None:
    proc, _ = quick
    assert proc.returncode == 0
    for value in DECOYS.values():
        assert value not in proc.stdout and value not in proc.stderr


def test_quick_demo_keeps_its_output(quick) -> None:
    _, keep = quick
    vectors = np.load(keep / "corpus.npy")
    assert vectors.shape == (1000, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sidecar = json.loads((keep / "corpus.json").read_text())
    assert sidecar["count"] == 1000 and sidecar["backend"] == "tei"
    assert (keep / "corpus.txt").read_text(encoding="utf-8").splitlines() == corpus_lines(1000)
    assert not list(keep.glob("*.ckpt")) and not list(keep.glob("*.partial"))


def test_help() -> None:
    proc = _cli("demo", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for words in ("--quick", "--keep DIR", "--progress", "No key or URL from the environment",
                  "Exits 1 if any request was lost"):
        assert words in text
    assert "demo" in _cli("--help").stdout


# -- the corpus --------------------------------------------------------------------------------
def test_the_package_carries_the_corpus() -> None:
    """Read as package data (so from the installed wheel when CI tests it): 20,000 distinct,
    non-empty UTF-8 lines."""
    data = resources.files("ipfs_accelerate_api.demo").joinpath(CORPUS).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    assert len(lines) == 20_000 and len(set(lines)) == 20_000 and all(lines)
    assert corpus_lines() == lines and corpus_lines(5) == lines[:5]


def test_pyproject_ships_the_corpus_as_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    path = os.path.join(root, "pyproject.toml")
    if not os.path.exists(path):
        pytest.skip("not a source tree")
    with open(path, "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert "demo/corpus.txt.gz" in data["ipfs_accelerate_api"]


def test_the_corpus_is_remade_byte_for_byte(tmp_path) -> None:
    from ipfs_accelerate_api.demo import _make_corpus

    _make_corpus.write(str(tmp_path / "c.gz"))
    bundled = resources.files("ipfs_accelerate_api.demo").joinpath(CORPUS).read_bytes()
    assert (tmp_path / "c.gz").read_bytes() == bundled


# -- the accounting ----------------------------------------------------------------------------
def test_ledger_counts_every_outcome() -> None:
    ledger = Ledger()
    ok, bad, expected, pending = Future(), Future(), Future(), Future()
    for f in (ok, bad):
        ledger.watch("openai", f)
    ledger.watch("openai", expected, (CircuitOpenError,))
    ledger.watch("claude", pending)
    ok.set_result("hi")
    bad.set_exception(ServerError("boom"))
    expected.set_exception(CircuitOpenError("open", retry_after=1.0))
    assert ledger.call("gemini", lambda: 1) == (1, None)
    _, exc = ledger.call("gemini", lambda: 1 / 0)
    assert isinstance(exc, ZeroDivisionError)
    assert ledger.settle(timeout=0.01) == 1  # the one never finished
    assert ledger.sent == {"openai": 3, "claude": 1, "gemini": 2}
    assert ledger.count(answered=True) == 2
    assert ledger.failures(expected=True) == {"CircuitOpenError": 1}
    assert ledger.failures(expected=False) == {"ServerError": 1, "ZeroDivisionError": 1}
    threading.Thread(target=pending.set_result, args=("late",)).start()
    assert ledger.settle(timeout=5) == 0


def test_table_lines_up() -> None:
    stats = {"submitted": 1200, "succeeded": 1199, "failed": 1, "retried": 3, "rate_limited": 2,
             "breaker": {"trips": 1}, "latency": {"p50": 0.0123, "p99": 0.4}}
    lines = table([("openai", "gpt-4o-mini", stats, "9,999"), ("tei", "m", stats, "~1")])
    assert lines[0].split()[:3] == ["backend", "model", "requests"]
    assert "1,200" in lines[2] and "12 ms" in lines[2] and "400 ms" in lines[2]
    assert len({len(line) for line in lines}) == 1


def test_run_demo_in_process_accounts_for_everything() -> None:
    out = io.StringIO()
    plan = DemoPlan(rows=64, chats=2, fast_fail=2, after=1, recovery=0.5)
    result = run_demo(plan=plan, out=out)
    assert result.ok, out.getvalue()
    assert result.rows == 64 and result.problems == [] and result.output is None
    assert set(result.stats) == set(BACKENDS)
    assert result.stats["openai"]["breaker"]["trips"] == 1
    assert result.stats["openai"]["breaker"]["state"] == "CLOSED"


def test_a_lost_request_exits_1(monkeypatch, capsys) -> None:
    from ipfs_accelerate_api import cli
    from ipfs_accelerate_api.demo import DemoResult

    def lossy(**_: object) -> DemoResult:
        return DemoResult(ok=False, problems=["1 requests never finished"], seconds=0.0, rows=0)

    monkeypatch.setattr("ipfs_accelerate_api.demo.run_demo", lossy)
    assert cli.main(["demo", "--quick"]) == cli.EXIT["failed"]
