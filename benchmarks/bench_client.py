"""Client overhead against one fast fixed-response server (nginx serving canned JSON).

Compared in the same run: our backend, raw urllib3, requests, the official openai SDK and
litellm. Skipped when nginx is not installed (``apt-get install nginx-light``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import QUICK, per_op

N_SEQ = 20 if QUICK else 300
N_PAR = 80 if QUICK else 4000
PAR_ROUNDS = 1 if QUICK else 7
THREADS = 8
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]

CHAT_JSON = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini", "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "Hello! How can I help you today?",
                             "refusal": None}}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23},
})
_rng = np.random.default_rng(0)
EMBED_JSON = json.dumps({
    "object": "list", "model": "text-embedding-3-small",
    "data": [{"object": "embedding", "index": i,
              "embedding": base64.b64encode(_rng.standard_normal(384).astype("<f4").tobytes()).decode()}
             for i in range(8)],
    "usage": {"prompt_tokens": 16, "total_tokens": 16},
})
#: The same vectors as JSON floats (what a server that ignores encoding_format sends).
EMBED_FLOAT_JSON = json.dumps({
    "object": "list", "model": "text-embedding-3-small",
    "data": [{"object": "embedding", "index": i,
              "embedding": np.frombuffer(base64.b64decode(d["embedding"]), "<f4").tolist()}
             for i, d in enumerate(json.loads(EMBED_JSON)["data"])],
    "usage": {"prompt_tokens": 16, "total_tokens": 16},
})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def nginx(routes: dict[str, str]):
    """nginx on a free loopback port answering each POST path in ``routes`` with its canned
    JSON body (200); yields the root URL. Skips the test when nginx is not installed."""
    nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx_bin is None:
        pytest.skip("nginx not installed")
    tmp = tempfile.mkdtemp(prefix="ia-nginx-")
    port = _free_port()
    # nginx will not serve a static file to POST: answer 405, then serve the canned file as 200.
    locations = "".join(f"    location = {path} {{ error_page 405 =200 /{i}.json; return 405; }}\n"
                        for i, path in enumerate(routes))
    conf = f"""
worker_processes 1;
daemon off;
master_process off;
error_log stderr error;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port};
    root {tmp};
    default_type application/json;
{locations}  }}
}}
"""
    for i, body in enumerate(routes.values()):
        with open(os.path.join(tmp, f"{i}.json"), "w") as fh:
            fh.write(body)
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as fh:
        fh.write(conf)
    proc = subprocess.Popen([nginx_bin, "-c", path, "-p", tmp], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                err = proc.stderr.read().decode()[:300]
                proc.stderr.close()
                pytest.skip(f"nginx did not start: {err}")
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    with nginx({"/v1/chat/completions": CHAT_JSON, "/v1/embeddings": EMBED_JSON,
                "/float/v1/embeddings": EMBED_FLOAT_JSON}) as root:
        yield root + "/v1"


def _ours(server, **kw):
    from ipfs_accelerate_api import backend

    return backend("openai", base_url=server, api_key="sk-bench", **kw)


# -- sequential chat ------------------------------------------------------------------------

@pytest.mark.benchmark(group="client: chat, sequential")
def test_chat_ours(benchmark, server):
    ai = _ours(server, max_concurrency=1)
    ai.chat(MESSAGES, model="gpt-4o-mini")

    def run():
        for _ in range(N_SEQ):
            ai.chat(MESSAGES, model="gpt-4o-mini")

    per_op(benchmark, N_SEQ)
    benchmark.extra_info["impl"] = "ipfs_accelerate_api"
    try:
        benchmark(run)
    finally:
        ai.close()


@pytest.mark.benchmark(group="client: chat, sequential")
def test_chat_raw_urllib3(benchmark, server):
    import urllib3

    pool = urllib3.PoolManager(maxsize=1, retries=False)
    url = server + "/chat/completions"
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

    def run():
        for _ in range(N_SEQ):
            body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
            r = pool.request("POST", url, body=body, headers=headers)
            json.loads(r.data)["choices"][0]["message"]["content"]

    per_op(benchmark, N_SEQ)
    benchmark.extra_info["impl"] = "raw urllib3"
    benchmark(run)


@pytest.mark.benchmark(group="client: chat, sequential")
def test_chat_requests(benchmark, server):
    requests = pytest.importorskip("requests")
    session = requests.Session()
    url = server + "/chat/completions"
    headers = {"Authorization": "Bearer sk-bench"}

    def run():
        for _ in range(N_SEQ):
            r = session.post(url, json={"model": "gpt-4o-mini", "messages": MESSAGES}, headers=headers)
            r.json()["choices"][0]["message"]["content"]

    per_op(benchmark, N_SEQ)
    benchmark.extra_info["impl"] = "requests"
    try:
        benchmark(run)
    finally:
        session.close()


@pytest.mark.benchmark(group="client: chat, sequential")
def test_chat_openai_sdk(benchmark, server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server, api_key="sk-bench", max_retries=0)

    def run():
        for _ in range(N_SEQ):
            _ = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content

    per_op(benchmark, N_SEQ)
    benchmark.extra_info["impl"] = "openai SDK"
    benchmark(run)


_LITELLM_SCRIPT = """
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import litellm
base, n = sys.argv[1], int(sys.argv[2])
msgs = json.loads(sys.argv[3])
call = lambda: litellm.completion(model="openai/gpt-4o-mini", messages=msgs, api_base=base,
                                  api_key="sk-bench", num_retries=0)
call()
times = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(n):
        call()
    times.append((time.perf_counter() - t) / n)
print(statistics.median(times))
"""


def litellm_child(benchmark, script: str, server: str, impl: str, n: int) -> None:
    """Time ``script`` (it prints seconds per call) in a child process: litellm's import
    leaves threads, sockets and event loops behind that would otherwise leak into this test
    session. Skipped without litellm."""
    pytest.importorskip("litellm")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no network fetch at import
    cmd = [sys.executable, "-c", script, server, str(n), json.dumps(MESSAGES)]

    def run():
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if out.returncode != 0:
            pytest.skip(f"litellm failed: {out.stderr[-300:]}")
        return float(out.stdout.strip().splitlines()[-1])

    seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["seconds_per_op"] = seconds
    benchmark.extra_info["ops_per_call"] = 1


@pytest.mark.benchmark(group="client: chat, sequential")
def test_chat_litellm(benchmark, server):
    litellm_child(benchmark, _LITELLM_SCRIPT, server, "litellm", max(5, N_SEQ // 10))


# -- embeddings -----------------------------------------------------------------------------

TEXTS = [f"text number {i}" for i in range(8)]


def _base(server, answer):
    return server if answer == "base64" else server.replace("/v1", "/float/v1")


@pytest.mark.benchmark(group="client: embed 8 x 384")
@pytest.mark.parametrize("answer", ["base64", "float"])
def test_embed_ours(benchmark, server, answer):
    ai = _ours(_base(server, answer), max_concurrency=1)

    def run():
        for _ in range(N_SEQ):
            ai.embed(TEXTS, model="text-embedding-3-small")

    per_op(benchmark, N_SEQ)
    benchmark.extra_info["impl"] = f"ipfs_accelerate_api ({answer} answer)"
    try:
        out = ai.embed(TEXTS, model="text-embedding-3-small")
        assert out.shape == (8, 384)
        benchmark(run)
    finally:
        ai.close()


@pytest.mark.benchmark(group="client: embed 8 x 384")
@pytest.mark.parametrize("answer", ["base64", "float"])
def test_embed_openai_sdk(benchmark, server, answer):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=_base(server, answer), api_key="sk-bench", max_retries=0)
    n = max(5, N_SEQ // 10)

    def run():
        for _ in range(n):
            r = client.embeddings.create(model="text-embedding-3-small", input=TEXTS)
            np.array([d.embedding for d in r.data], dtype=np.float32)

    per_op(benchmark, n)
    benchmark.extra_info["impl"] = f"openai SDK ({answer} answer, to numpy)"
    benchmark(run)


# -- throughput, 8 threads ------------------------------------------------------------------

def _threaded(fn, n: int) -> None:
    per = n // THREADS
    threads = [threading.Thread(target=lambda: [fn() for _ in range(per)]) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.benchmark(group="client: chat, 8 threads")
def test_throughput_ours(benchmark, server):
    ai = _ours(server, max_concurrency=THREADS)
    per_op(benchmark, N_PAR)
    benchmark.extra_info["impl"] = "ipfs_accelerate_api"
    try:
        benchmark.pedantic(_threaded, (lambda: ai.chat(MESSAGES, model="gpt-4o-mini"), N_PAR),
                           rounds=PAR_ROUNDS, warmup_rounds=1)
    finally:
        ai.close()


@pytest.mark.benchmark(group="client: chat, 8 threads")
def test_throughput_raw_urllib3(benchmark, server):
    import urllib3

    pool = urllib3.PoolManager(maxsize=THREADS, retries=False)
    url = server + "/chat/completions"
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

    def one():
        body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
        json.loads(pool.request("POST", url, body=body, headers=headers).data)

    per_op(benchmark, N_PAR)
    benchmark.extra_info["impl"] = "raw urllib3"
    benchmark.pedantic(_threaded, (one, N_PAR), rounds=PAR_ROUNDS, warmup_rounds=1)


# -- import time ----------------------------------------------------------------------------

def _import_time(module: str) -> float:
    best = float("inf")
    for _ in range(2 if QUICK else 5):
        t = time.perf_counter()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, env=env)
        elapsed = time.perf_counter() - t
        if r.returncode != 0:
            pytest.skip(f"{module} not importable")
        best = min(best, elapsed)
    base = min(_python_startup() for _ in range(3))
    return best - base


_STARTUP: list[float] = []


def _python_startup() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], capture_output=True)
    return time.perf_counter() - t


@pytest.mark.benchmark(group="client: import time")
@pytest.mark.parametrize("module", ["ipfs_accelerate_api", "openai", "litellm"])
def test_import_time(benchmark, module):
    seconds = benchmark.pedantic(_import_time, (module,), rounds=1, iterations=1)
    benchmark.extra_info["impl"] = module
    benchmark.extra_info["seconds_per_op"] = seconds
    benchmark.extra_info["ops_per_call"] = 1
