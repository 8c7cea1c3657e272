"""S3 Kit throughput against moto's server (its own process, loopback), compared in the same
run on the same server with plain boto3:

* one 256 MiB file (quick mode: 16 MiB) up with ``upload_file`` and down with
  ``download_file``: ours (SHA-256 computed on the way up and checked on the way down, our
  ``TransferConfig``) against boto3's ``upload_file`` / ``download_file`` with its default
  ``TransferConfig`` (target: no slower);
* a 40-file model: ``put_model`` / ``get_model`` against a loop of plain boto3 calls over
  the same files (``upload_file`` / ``download_file``, one after the other).

Both clients use the same client settings (path-style addressing, checksums when required).

    python -m pytest benchmarks/bench_s3.py -p no:cacheprovider --benchmark-enable -o addopts=
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import QUICK, per_op

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

from botocore.config import Config  # noqa: E402

from ipfs_accelerate_api import backend  # noqa: E402
from ipfs_accelerate_api.backends.s3 import (  # noqa: E402
    DEFAULT_MULTIPART_CHUNKSIZE,
    DEFAULT_MULTIPART_THRESHOLD,
)

MiB = 1 << 20
SIZE = (16 if QUICK else 256) * MiB
ROUNDS = 1 if QUICK else 5
MODEL_FILES = 40
#: The model: two 8 MiB shards and 38 small files (configs, vocabularies, small tensors).
MODEL_SIZES = [(2 if QUICK else 8) * MiB] * 2 + [(16 + 23 * i) * 1024 for i in range(MODEL_FILES - 2)]
BUCKET = "bench"
ACCESS, SECRET = "AKIABENCH", "bench-secret"
BOTO = "boto3 upload_file/download_file (default TransferConfig)"
LOOP = "loop of plain boto3 calls"
OURS = "ipfs_accelerate_api"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        _plain(url).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _plain(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                        config=Config(s3={"addressing_style": "path"},
                                      request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s3bench") / "big.bin"
    with open(path, "wb") as fh:
        for _ in range(SIZE // MiB):
            fh.write(os.urandom(MiB))
        fh.flush()
        os.fsync(fh.fileno())  # no write-back of it competes with whichever test runs first
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3model")
    for i, size in enumerate(MODEL_SIZES):
        sub = root / ("weights" if i < 2 else "files")
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:02d}.bin").write_bytes(os.urandom(size))
    return str(root)


def _measure(benchmark, impl: str, run, setup=None, size: int = SIZE) -> None:
    times: list[float] = []

    def timed() -> None:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)

    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = impl
    benchmark.pedantic(timed, setup=setup, rounds=ROUNDS, iterations=1,
                       warmup_rounds=0 if QUICK else 1)  # moto's first big object is slower
    benchmark.extra_info["MiB_per_s"] = round(size / MiB / min(times[-ROUNDS:]), 1)


def _fresh(path: str):
    def setup() -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    return setup


@pytest.fixture
def ours(server):
    with backend("s3", endpoint_url=server, access_key=ACCESS, secret_key=SECRET,
                 bucket=BUCKET) as s3:
        yield s3


@pytest.mark.benchmark(group="s3: upload_file")
def test_upload_ours(benchmark, ours, big_file) -> None:
    _measure(benchmark, OURS, lambda: ours.upload_file(big_file, "big-ours"))
    if SIZE >= DEFAULT_MULTIPART_THRESHOLD:  # in parts
        assert ours.head("big-ours").etag.endswith(f"-{-(-SIZE // DEFAULT_MULTIPART_CHUNKSIZE)}")


@pytest.mark.benchmark(group="s3: upload_file")
def test_upload_boto3(benchmark, server, big_file) -> None:
    client = _plain(server)
    _measure(benchmark, BOTO, lambda: client.upload_file(big_file, BUCKET, "big-boto3"))


@pytest.mark.benchmark(group="s3: download_file")
def test_download_ours(benchmark, ours, big_file, tmp_path) -> None:
    ours.upload_file(big_file, "big-ours")
    dest = str(tmp_path / "down.bin")
    _measure(benchmark, OURS, lambda: ours.download_file("big-ours", dest), _fresh(dest))
    assert os.path.getsize(dest) == SIZE


@pytest.mark.benchmark(group="s3: download_file")
def test_download_boto3(benchmark, server, big_file, tmp_path) -> None:
    client = _plain(server)
    client.upload_file(big_file, BUCKET, "big-boto3")
    dest = str(tmp_path / "down.bin")
    _measure(benchmark, BOTO, lambda: client.download_file(BUCKET, "big-boto3", dest),
             _fresh(dest))
    assert os.path.getsize(dest) == SIZE


@pytest.mark.benchmark(group="s3: put_model 40 files")
def test_put_model_ours(benchmark, ours, model_dir) -> None:
    _measure(benchmark, OURS, lambda: ours.put_model(model_dir, "bench", "v1"),
             size=sum(MODEL_SIZES))
    assert ("bench", "v1") in ours.list_models()


def _model_files(root: str) -> list[tuple[str, str]]:
    out = []
    for here, _, files in os.walk(root):
        for f in files:
            full = os.path.join(here, f)
            out.append((os.path.relpath(full, root), full))
    return sorted(out)


@pytest.mark.benchmark(group="s3: put_model 40 files")
def test_put_model_boto3_loop(benchmark, server, model_dir) -> None:
    client = _plain(server)
    files = _model_files(model_dir)

    def run() -> None:
        for rel, full in files:
            client.upload_file(full, BUCKET, f"loop/v1/{rel}")

    _measure(benchmark, LOOP, run, size=sum(MODEL_SIZES))


@pytest.mark.benchmark(group="s3: get_model 40 files")
def test_get_model_ours(benchmark, ours, model_dir, tmp_path) -> None:
    ours.put_model(model_dir, "bench", "v1")
    dest = str(tmp_path / "model")
    _measure(benchmark, OURS, lambda: ours.get_model("bench", "v1", dest), _fresh(dest),
             size=sum(MODEL_SIZES))
    assert len(_model_files(dest)) == MODEL_FILES


@pytest.mark.benchmark(group="s3: get_model 40 files")
def test_get_model_boto3_loop(benchmark, server, model_dir, tmp_path) -> None:
    client = _plain(server)
    files = _model_files(model_dir)
    for rel, full in files:
        client.upload_file(full, BUCKET, f"loop/v1/{rel}")
    dest = str(tmp_path / "model")

    def run() -> None:
        for rel, _ in files:
            target = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            client.download_file(BUCKET, f"loop/v1/{rel}", target)

    _measure(benchmark, LOOP, run, _fresh(dest), size=sum(MODEL_SIZES))
    assert len(_model_files(dest)) == MODEL_FILES
