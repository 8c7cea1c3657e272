"""``ipfs-accel search | chat | models | keys | bench``, end to end: each run is a subprocess
against an emulator started here, and its exit status, stdout and stderr are checked."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import numpy as np
import pytest

from ipfs_accelerate_api.backends import backend
from ipfs_accelerate_api.emulator import ServiceConfig

COMMANDS = ["embed", "search", "chat", "models", "keys", "emulate", "bench"]
QUERIES = ["alpha bravo charlie", "lima mike", "an unrelated question", "echo"]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike"]


def one_line_error(r) -> str:
    """The run's stderr, checked to be one line without a traceback."""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r
    return lines[0]


def read_json(path: str):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)


def brute_force(queries: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    m = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = q.astype(np.float64) @ m.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


# -- --help and usage errors ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help(cli, command):
    r = cli(*([command] if command else []), "--help")
    assert r.rc == 0 and r.stderr == "", r
    assert r.stdout.startswith(f"usage: ipfs-accel {command}".rstrip()), r
    if not command:
        for name in COMMANDS:
            assert f"    {name} " in r.stdout, r


@pytest.mark.parametrize("args", [
    [],                                      # no command
    ["frobnicate"],                          # no such command
    ["search", "--query", "x"],              # no OUT.npy, no --backend
    ["chat", "--backend", "openai"],         # no prompt
    ["models"],                              # no --backend
    ["search", "x.npy", "-q", "x", "--backend", "tei", "-k", "many"],
    ["keys", "--no-such-option"],
])
def test_usage_errors_exit_2(cli, args):
    r = cli(*args)
    assert r.rc == 2 and r.stdout == "", r
    assert "usage: ipfs-accel" in r.stderr and "error:" in r.stderr and "Traceback" not in r.stderr, r


# -- search ------------------------------------------------------------------------------------

@pytest.fixture
def corpus(tmp_path):
    """A text file of 600 lines, three of them empty (dropped with --skip-empty): its path
    and its kept records in row order."""
    rng = np.random.default_rng(7)
    lines = [" ".join(rng.choice(WORDS, 5)) if i % 200 != 3 else "" for i in range(600)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path), [t for t in lines if t]


@pytest.fixture
def index(cli, emulator, corpus, tmp_path):
    """corpus embedded by ``ipfs-accel embed`` through the emulator's TEI: OUT.npy's path."""
    out = str(tmp_path / "out.npy")
    r = cli("embed", corpus[0], "-o", out, "--skip-empty", *cli.on(emulator, "tei"))
    assert r.rc == 0, r
    meta = read_json(out[:-4] + ".json")
    assert meta["count"] == len(corpus[1]) and len(meta["dropped"]) == 3
    return out


def _search(cli, out, *extra):
    args = ["search", out, "-k", "5", "--backend", "tei", "--json", *extra]
    for q in QUERIES:
        args += ["--query", q]
    r = cli(*args)
    assert r.rc == 0 and r.stderr == "", r
    return r.json


def _query_vectors(emulator):
    with backend("tei", base_url=emulator.base_url("tei")) as ai:
        return ai.embed(QUERIES)


def test_search_equals_brute_force_with_texts(cli, emulator, corpus, index):
    data = _search(cli, index, "--text", corpus[0])
    matrix = np.load(index)
    scores, rows = brute_force(_query_vectors(emulator), matrix, 5)
    assert [r["query"] for r in data["results"]] == QUERIES and data["k"] == 5
    for result, want_rows, want_scores in zip(data["results"], rows, scores):
        assert [h["row"] for h in result["hits"]] == want_rows.tolist()
        np.testing.assert_allclose([h["score"] for h in result["hits"]], want_scores,
                                   rtol=1e-5, atol=1e-6)
        for h in result["hits"]:  # row i is the i-th kept record: the dropped lines skipped
            assert h["text"] == corpus[1][h["row"]]
    # The base URL came from the sidecar (none was given) and the queries went to TEI.
    assert emulator.stats("tei")["requests"] > 0


def test_search_rows_not_normalized_are_ranked_by_cosine(cli, emulator, index):
    matrix = np.load(index)
    matrix = matrix * np.random.default_rng(3).uniform(0.1, 9.0, (len(matrix), 1))
    np.save(index, matrix.astype(np.float32))
    meta_path = index[:-4] + ".json"
    meta = read_json(meta_path)
    meta["normalized"] = False
    write_json(meta_path, meta)
    data = _search(cli, index)
    scores, rows = brute_force(_query_vectors(emulator), np.load(index), 5)
    for result, want_rows, want_scores in zip(data["results"], rows, scores):
        assert [h["row"] for h in result["hits"]] == want_rows.tolist()
        np.testing.assert_allclose([h["score"] for h in result["hits"]], want_scores,
                                   rtol=1e-5, atol=1e-6)


def test_search_text_output_and_queries_file(cli, index, corpus, tmp_path):
    qfile = tmp_path / "queries.txt"
    qfile.write_text("alpha bravo\n\nlima mike\n")
    r = cli("search", index, "--queries", str(qfile), "-k", "2", "--backend", "tei",
            "--text", corpus[0])
    assert r.rc == 0 and r.stderr == "", r
    blocks = r.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["query: alpha bravo", "query: lima mike"]
    for b in blocks:
        hits = b.splitlines()[1:]
        assert len(hits) == 2
        for n, line in enumerate(hits, 1):
            rank, _, row, score, *text = line.split()
            assert int(rank) == n and -1 <= float(score) <= 1
            assert " ".join(text) == corpus[1][int(row)]


def test_search_k_larger_than_the_matrix_gives_every_row(cli, index, corpus):
    r = cli("search", index, "-q", "x", "-k", "100000", "--backend", "tei", "--json")
    assert r.rc == 0, r
    rows = [h["row"] for h in r.json["results"][0]["hits"]]
    assert sorted(rows) == list(range(len(corpus[1])))


@pytest.mark.parametrize("extra, word", [
    (["--backend", "openai"], "tei"),             # another backend than the sidecar's
    (["--backend", "tei", "--model", "other/model"], "model"),
])
def test_search_refuses_options_that_contradict_the_sidecar(cli, index, extra, word):
    r = cli("search", index, "-q", "x", *extra)
    assert r.rc == 1 and r.stdout == "", r
    assert word in one_line_error(r)


def test_search_refuses_a_matrix_without_its_sidecar(cli, index):
    os.remove(index[:-4] + ".json")
    r = cli("search", index, "-q", "x", "--backend", "tei")
    assert r.rc == 1 and "sidecar" in one_line_error(r), r


def test_search_refuses_text_that_is_not_the_embedded_input(cli, index, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("just\nthree\nlines\n")
    r = cli("search", index, "-q", "x", "--backend", "tei", "--text", str(other))
    assert r.rc == 1 and "not the embedded input" in one_line_error(r), r


def test_rank_in_chunks_equals_brute_force(monkeypatch):
    """The chunked ranking (chunks of 7 rows here) merges to the brute-force top k, equal
    scores by lower row, for normalised and raw rows."""
    from ipfs_accelerate_api.cli import search

    monkeypatch.setattr(search, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(11)
    matrix = rng.standard_normal((100, 16)).astype(np.float32)
    matrix[50] = matrix[3] * 2  # the same direction: equal cosines, lower row first
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    queries[0] = matrix[3]
    want_s, want_i = brute_force(queries, matrix, 9)
    got_s, got_i = search.rank(queries, matrix, 9, normalized=False)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-6)
    assert got_i[0, 0] == 3 and got_i[0, 1] == 50
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    got_s, got_i = search.rank(queries, unit, 9, normalized=True)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-6)
    assert set(got_i[1].tolist()) == set(want_i[1].tolist())


# -- chat and models ---------------------------------------------------------------------------

CHAT = ["--model", "gpt-4o-mini", "--system", "You are terse."]


def _reply(emulator, prompt: str) -> str:
    with backend("openai", base_url=emulator.base_url("openai"), api_key="sk-test") as ai:
        return ai.chat([{"role": "system", "content": "You are terse."},
                        {"role": "user", "content": prompt}], model="gpt-4o-mini").text


def test_chat_streams_the_same_reply_as_a_whole_one(cli, make_emulator):
    emu = make_emulator({"openai": ServiceConfig(stream_delay=0.4)})
    prompt = "tell me about the weather on the coast"
    want = _reply(emu, prompt)
    assert len(want) > 8  # more than one streamed piece
    p = cli.popen("chat", *cli.on(emu, "openai"), *CHAT, "--verbose", prompt,
                  env={"OPENAI_API_KEY": "sk-test"})
    first = p.stdout.read1(1 << 16)  # the first piece, printed before the reply ended
    running = p.poll() is None
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert running and 0 < len(first) < len(want.encode())
    assert (first + rest).decode() == want + "\n"
    assert "finish reason: stop" in err.decode() and "tokens:" in err.decode()


@pytest.mark.parametrize("how", ["stdin", "no-stream"])
def test_chat_prompt_from_stdin_and_without_streaming(cli, emulator, how):
    prompt = "what is the capital of France"
    args = ["-"] if how == "stdin" else ["--no-stream", *prompt.split()]
    r = cli("chat", *cli.on(emulator, "openai"), *CHAT, *args,
            input=prompt if how == "stdin" else None, env={"OPENAI_API_KEY": "sk-test"})
    assert r.rc == 0 and r.stderr == "", r
    assert r.stdout == _reply(emulator, prompt) + "\n"


def test_chat_without_a_model_where_one_is_needed_is_a_usage_error(cli, emulator):
    r = cli("chat", *cli.on(emulator, "openai"), "hi", env={"OPENAI_API_KEY": "sk-test"})
    assert r.rc == 2 and "--model" in one_line_error(r), r


def test_chat_interrupted_exits_130_cleanly(cli, make_emulator):
    emu = make_emulator({"openai": ServiceConfig(stream_delay=2.0)})
    p = cli.popen("chat", *cli.on(emu, "openai"), *CHAT, "a long story please",
                  env={"OPENAI_API_KEY": "sk-test"})
    deadline = time.monotonic() + 30
    while not emu.stats("openai")["requests"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emu.stats("openai")["requests"], "the request never arrived"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert err.decode().strip() == "ipfs-accel: interrupted"


def test_models_one_per_line_and_json(cli, emulator):
    with backend("ollama", base_url=emulator.base_url("ollama")) as ai:
        want = ai.list_models()
    r = cli("models", *cli.on(emulator, "ollama"))
    assert r.rc == 0 and r.stderr == "" and r.stdout.splitlines() == want, r
    r = cli("models", *cli.on(emulator, "ollama"), "--json")
    assert r.rc == 0 and r.json == want, r


# -- exit codes --------------------------------------------------------------------------------

def test_no_key_exits_3(cli, emulator):
    r = cli("models", *cli.on(emulator, "openai"))
    assert r.rc == 3 and r.stdout == "", r
    assert "OPENAI_API_KEY" in one_line_error(r)


def test_a_refused_key_exits_3_without_showing_it(cli, make_emulator):
    emu = make_emulator({"openai": ServiceConfig(keys=["sk-the-right-one-000000"])})
    canary = "sk-CANARY-wrong-key-1234567890"
    r = cli("chat", *cli.on(emu, "openai"), *CHAT, "hi", env={"OPENAI_API_KEY": canary})
    assert r.rc == 3, r
    one_line_error(r)
    assert canary not in r.stdout + r.stderr


def test_connection_refused_exits_4(cli):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("models", "--backend", "ollama", "--base-url", f"http://127.0.0.1:{port}")
    assert r.rc == 4 and r.stdout == "", r
    assert "connect" in one_line_error(r)


def test_debug_shows_the_traceback(cli):
    r = cli("--debug", "models", "--backend", "openai")
    assert r.rc == 3 and "Traceback" in r.stderr, r


# -- keys --------------------------------------------------------------------------------------

CANARY_ENV = "sk-proj-CANARYenv0123456789abcdWXYZ"
CANARY_FILE = "gsk_CANARYfile0123456789abcdQRST"


def test_keys_are_masked_with_their_origin(cli):
    path = cli.write_credentials({"groq": CANARY_FILE, "claude": {"api_keys": ["short-key"]},
                                  "tgi": {"api_key": "hf_CANARYfile2_abcdefgh1234",
                                          "base_url": "http://tgi.local:8080"}})
    env = {"OPENAI_API_KEY_1": CANARY_ENV, "OPENAI_API_KEY_2": "CANARY2-abcdefgh-9876",
           "GOOGLE_API_KEY": "AIzaCANARYgoogle-0123456789-4321"}
    r = cli("keys", env=env)
    assert r.rc == 0 and r.stderr == "", r
    everything = r.stdout + r.stderr
    for secret in (CANARY_ENV, CANARY_FILE, "CANARY2", "CANARYgoogle", "CANARYfile2", "short-key"):
        assert secret not in everything
    rows = {tuple(line.split(None, 2)) for line in r.stdout.splitlines()}
    assert ("openai", "sk-…WXYZ", "OPENAI_API_KEY_1") in rows
    assert ("openai", "…9876", "OPENAI_API_KEY_2") in rows
    assert ("gemini", "…4321", "GOOGLE_API_KEY") in rows
    assert ("groq", "gsk_…QRST", path) in rows
    assert ("claude", "****", path) in rows  # shorter than 12: nothing shown
    assert ("tgi", "hf_…1234", path) in rows
    assert any(line.startswith("tei ") and "not needed" in line for line in r.stdout.splitlines())

    r = cli("keys", "--backend", "anthropic", "--json", env=env)
    assert r.rc == 0, r
    assert r.json == [{"backend": "claude", "required": True, "base_url": None,
                       "keys": [{"key": "****", "source": path}],
                       "env": ["ANTHROPIC_API_KEY", "CLAUDE_API_KEY"]}]
    r = cli("keys", "--json", env=env)
    assert r.rc == 0 and CANARY_ENV not in r.stdout and CANARY_FILE not in r.stdout


def test_keys_refuses_a_credentials_file_others_can_read(cli):
    cli.write_credentials({"groq": CANARY_FILE}, mode=0o644)
    r = cli("keys")
    assert r.rc == 3 and r.stdout == "", r
    assert "chmod 600" in one_line_error(r) and CANARY_FILE not in r.stderr


def test_keys_of_an_unknown_backend_exits_3(cli):
    r = cli("keys", "--backend", "nosuch")
    assert r.rc == 3 and "unknown backend" in one_line_error(r), r


# -- bench -------------------------------------------------------------------------------------

def test_bench_builtin(cli):
    r = cli("bench", "--builtin", "--calls", "5", "--rounds", "1", "--json")
    assert r.rc == 0, r
    seconds = r.json["seconds_per_call"]
    assert seconds["ipfs_accelerate_api"] > 0 and seconds["raw urllib3"] > 0
    r = cli("bench", "--builtin", "--calls", "3", "--rounds", "1")
    assert r.rc == 0 and "| ipfs_accelerate_api |" in r.stdout and "| raw urllib3 |" in r.stdout, r


# -- embed --format parquet ----------------------------------------------------------------------

def test_embed_parquet_holds_each_row_with_its_text(cli, emulator, corpus, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    # The subprocess imports the same pyarrow as this session.
    where = os.path.dirname(os.path.dirname(os.path.abspath(pa.__file__)))
    out = str(tmp_path / "vectors.parquet")
    r = cli("embed", corpus[0], "-o", out, "--format", "parquet", "--skip-empty",
            *cli.on(emulator, "tei"), "--json",
            env={"PYTHONPATH": cli.env["PYTHONPATH"] + os.pathsep + where})
    assert r.rc == 0, r
    assert r.json["parquet"] == out and r.json["output"] == out[:-8] + ".npy"
    table = pq.read_table(out)
    assert table.column_names == ["row", "line", "text", "embedding"]
    matrix = np.load(out[:-8] + ".npy")
    assert table.num_rows == len(matrix) == len(corpus[1])
    assert table.column("row").to_pylist() == list(range(len(matrix)))
    assert table.column("text").to_pylist() == corpus[1]
    with open(corpus[0], encoding="utf-8") as fh:
        lines = [n for n, line in enumerate(fh, 1) if line.strip()]
    assert table.column("line").to_pylist() == lines
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(vectors, matrix)
    sidecar = json.loads(table.schema.metadata[b"ipfs_accelerate_api"])
    assert sidecar == read_json(out[:-8] + ".json")


def test_embed_parquet_without_pyarrow_exits_3_before_embedding(cli, emulator, corpus, tmp_path):
    shadow = tmp_path / "shadow" / "pyarrow"  # an import of pyarrow fails, installed or not
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no pyarrow here')\n")
    r = cli("embed", corpus[0], "-o", str(tmp_path / "v.npy"), "--format", "parquet",
            *cli.on(emulator, "tei"),
            env={"PYTHONPATH": str(shadow.parent) + os.pathsep + cli.env["PYTHONPATH"]})
    assert r.rc == 3 and "[parquet]" in one_line_error(r), r
    assert emulator.stats("tei")["requests"] == 0 and not os.path.exists(tmp_path / "v.npy")


def test_write_parquet_in_row_groups_and_refusing_a_changed_source(index, corpus, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from ipfs_accelerate_api.errors import InputError
    from ipfs_accelerate_api.pipelines.parquet import write_parquet

    out = str(tmp_path / "groups.parquet")
    assert write_parquet(index, out, source=corpus[0], rows_per_group=50) == len(corpus[1])
    f = pq.ParquetFile(out)
    assert f.metadata.num_row_groups == -(-len(corpus[1]) // 50)
    table = f.read()
    assert table.column("text").to_pylist() == corpus[1]
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist(), np.float32),
                                  np.load(index))
    with open(corpus[0], "r+b") as fh:  # same size, one byte changed
        fh.seek(10)
        fh.write(b"Z")
    with pytest.raises(InputError, match="SHA-256"):
        write_parquet(index, str(tmp_path / "changed.parquet"), source=corpus[0])
    assert not os.path.exists(tmp_path / "changed.parquet")
    assert not os.path.exists(tmp_path / "changed.parquet.tmp")


def test_search_without_backend_uses_the_one_that_made_the_file(cli, index):
    with_it = cli("search", index, "-q", "alpha bravo", "-k", "3", "--backend", "tei", "--json")
    without = cli("search", index, "-q", "alpha bravo", "-k", "3", "--json")
    assert without.rc == 0, without
    assert json.loads(without.stdout)["results"] == json.loads(with_it.stdout)["results"]


def test_a_reader_that_leaves_ends_the_command_quietly(tmp_path):
    """``ipfs-accel ... | head -0``: exit 141 (128 + SIGPIPE), nothing on stderr."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate_api.cli", "keys"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HOME": str(tmp_path)})
    proc.stdout.close()  # the reader is gone before anything is written
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert stderr == b""


def test_keys_shows_the_s3_access_key_never_its_secret(cli):
    env = {"AWS_ACCESS_KEY_ID": "AKIACANARYACCESS7777", "AWS_SECRET_ACCESS_KEY": "CANARYsecret-s3-key-0000"}
    r = cli("keys", "--backend", "s3", env=env)
    assert r.rc == 0, r
    assert "CANARYsecret" not in r.stdout + r.stderr and "CANARYACCESS" not in r.stdout
    assert ("s3", "…7777", "AWS_ACCESS_KEY_ID") in {tuple(l.split(None, 2)) for l in r.stdout.splitlines()}
    path = cli.write_credentials({"s3": {"access_key": "AKIACANARYFILE888888", "secret_key": "CANARYsecret-file"}})
    r = cli("keys", "--backend", "s3_kit")
    assert r.rc == 0 and "CANARYsecret" not in r.stdout + r.stderr
    assert ("s3", "…8888", path) in {tuple(l.split(None, 2)) for l in r.stdout.splitlines()}
