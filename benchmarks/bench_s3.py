"""S3 Kit throughput against moto's server (its own process, loopback), compared in the same
run on the same server with plain boto3:

* one 256 MiB file (quick mode: 16 MiB) up with ``upload_file`` and down with
  ``download_file``: ours (SHA-256 computed on the way up and checked on the way down, our
  ``TransferConfig``) against boto3's ``upload_file`` / ``download_file`` with its default
  ``TransferConfig`` (target: no slower);
* a 40-file model: ``put_model`` / ``get_model`` against a loop of plain boto3 calls over
  the same files (``upload_file`` / ``download_file``, one after the other).

Both clients use the same client settings (path-style addressing, checksums when required).
In full mode each round of one side is preceded, untimed, by a round of the other, so both
meet the same load (moto's memory churn, this machine's write-back) whatever the test order.

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


def _clear(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _measure(benchmark, impl: str, runs: dict, clear: tuple[str, ...] = (),
             size: int = SIZE) -> None:
    """Time ``runs[impl]``. Before each round, untimed: the destinations cleared and (full
    mode) the other side's run, so both sides meet the same alternating load on the server
    and on this machine instead of whatever drifts from one test to the next."""
    other = next(run for name, run in runs.items() if name != impl)
    times: list[float] = []

    def setup() -> None:
        if not QUICK:
            other()
        for path in clear:
            _clear(path)

    def timed() -> None:
        t0 = time.perf_counter()
        runs[impl]()
        times.append(time.perf_counter() - t0)

    per_op(benchmark, 1)
    benchmark.extra_info["impl"] = impl
    benchmark.pedantic(timed, setup=setup, rounds=ROUNDS, iterations=1,
                       warmup_rounds=0 if QUICK else 1)
    benchmark.extra_info["MiB_per_s"] = round(size / MiB / min(times[-ROUNDS:]), 1)


@pytest.fixture
def ours(server):
    with backend("s3", endpoint_url=server, access_key=ACCESS, secret_key=SECRET,
                 bucket=BUCKET) as s3:
        yield s3


@pytest.fixture
def plain(server):
    return _plain(server)


def _model_files(root: str) -> list[tuple[str, str]]:
    out = []
    for here, _, files in os.walk(root):
        for f in files:
            full = os.path.join(here, f)
            out.append((os.path.relpath(full, root), full))
    return sorted(out)


@pytest.mark.benchmark(group="s3: upload_file")
@pytest.mark.parametrize("impl", [OURS, BOTO])
def test_upload(benchmark, ours, plain, big_file, impl) -> None:
    runs = {OURS: lambda: ours.upload_file(big_file, "big-ours"),
            BOTO: lambda: plain.upload_file(big_file, BUCKET, "big-boto3")}
    _measure(benchmark, impl, runs)
    if impl == OURS and SIZE >= DEFAULT_MULTIPART_THRESHOLD:  # in parts
        assert ours.head("big-ours").etag.endswith(f"-{-(-SIZE // DEFAULT_MULTIPART_CHUNKSIZE)}")


@pytest.mark.benchmark(group="s3: download_file")
@pytest.mark.parametrize("impl", [OURS, BOTO])
def test_download(benchmark, ours, plain, big_file, tmp_path, impl) -> None:
    ours.upload_file(big_file, "big-ours")
    plain.upload_file(big_file, BUCKET, "big-boto3")
    mine, theirs = str(tmp_path / "ours.bin"), str(tmp_path / "boto3.bin")
    runs = {OURS: lambda: ours.download_file("big-ours", mine),
            BOTO: lambda: plain.download_file(BUCKET, "big-boto3", theirs)}
    _measure(benchmark, impl, runs, clear=(mine, theirs))
    assert os.path.getsize(mine if impl == OURS else theirs) == SIZE


@pytest.mark.benchmark(group="s3: put_model 40 files")
@pytest.mark.parametrize("impl", [OURS, LOOP])
def test_put_model(benchmark, ours, plain, model_dir, impl) -> None:
    files = _model_files(model_dir)

    def loop() -> None:
        for rel, full in files:
            plain.upload_file(full, BUCKET, f"loop/v1/{rel}")

    runs = {OURS: lambda: ours.put_model(model_dir, "bench", "v1"), LOOP: loop}
    _measure(benchmark, impl, runs, size=sum(MODEL_SIZES))
    assert ("bench", "v1") in ours.list_models()


@pytest.mark.benchmark(group="s3: get_model 40 files")
@pytest.mark.parametrize("impl", [OURS, LOOP])
def test_get_model(benchmark, ours, plain, model_dir, tmp_path, impl) -> None:
    files = _model_files(model_dir)
    ours.put_model(model_dir, "bench", "v1")
    for rel, full in files:
        plain.upload_file(full, BUCKET, f"loop/v1/{rel}")
    mine, theirs = str(tmp_path / "ours"), str(tmp_path / "loop")

    def loop() -> None:
        for rel, _ in files:
            target = os.path.join(theirs, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            plain.download_file(BUCKET, f"loop/v1/{rel}", target)

    runs = {OURS: lambda: ours.get_model("bench", "v1", mine), LOOP: loop}
    _measure(benchmark, impl, runs, clear=(mine, theirs), size=sum(MODEL_SIZES))
    assert len(_model_files(mine if impl == OURS else theirs)) == MODEL_FILES
