"""A process killed with SIGKILL in the middle of ``download_file`` or ``get_model`` leaves
nothing partial at the destination, and ``get_model`` then resumes without fetching again
what was complete. The transfers run through a proxy that answers slowly, so the kill lands
mid-way; the test waits for evidence that it did before killing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import ACCESS_KEY, SECRET_KEY, write_model

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

MiB = 1 << 20
CHILD = """
import json, sys
from ipfs_accelerate_api import backend
c = json.loads(sys.argv[1])
s3 = backend("s3", endpoint_url=c["url"], access_key=c["access"], secret_key=c["secret"],
             bucket=c["bucket"], max_concurrency=1)
if c["op"] == "download_file":
    s3.download_file(c["key"], c["dest"])
else:
    s3.get_model("m", "v1", c["dest"])
print("finished")
"""


def _child(**config) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    config.update(access=ACCESS_KEY, secret=SECRET_KEY)
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, proc, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended before {what}: {proc.communicate()}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _temps(directory) -> list[str]:
    out = []
    for here, _, files in os.walk(directory):
        out += [os.path.join(here, f) for f in files if f.endswith(".part")]
    return out


def test_killed_download_file_leaves_no_partial_destination(make, proxy, bucket, tmp_path) -> None:
    s3 = make()
    data = os.urandom(40 * MiB)  # above the multipart threshold: parts in parallel
    s3.upload_bytes(data, "big.bin")
    proxy.add(method="GET", chunk=256 * 1024, pause=0.02)
    dest = tmp_path / "big.bin"
    proc = _child(op="download_file", url=proxy.url, bucket=bucket, key="big.bin",
                  dest=str(dest))
    _wait_for(lambda: any(os.path.getsize(t) > 0 for t in _temps(tmp_path)), proc,
              "the download started writing")
    _kill(proc)
    assert not dest.exists()
    assert len(_temps(tmp_path)) == 1  # what it had written, under a temporary name only
    s3.download_file("big.bin", dest)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert _temps(tmp_path) == []  # the dead process's temporary file was removed


def test_killed_get_model_leaves_whole_files_only_and_resumes(make, proxy, bucket, tmp_path) -> None:
    files = {f"shard-{i}.bin": os.urandom(512 * 1024) for i in range(6)}
    write_model(tmp_path / "src", files)
    s3 = make()
    s3.put_model(tmp_path / "src", "m", "v1")
    proxy.add(method="GET", path=r"/files/", delay=0.4)
    dest = tmp_path / "dest"
    proc = _child(op="get_model", url=proxy.url, bucket=bucket, dest=str(dest))

    def whole() -> list[str]:
        return [n for n in os.listdir(dest) if not n.endswith(".part")] if dest.exists() else []

    _wait_for(lambda: len(whole()) >= 2, proc, "two files were complete")
    _kill(proc)
    done = whole()
    assert 2 <= len(done) < len(files)  # killed mid-way
    for name in done:  # every file there is whole and right
        assert (dest / name).read_bytes() == files[name]
    gets = s3.stats()["endpoints"][0]["requests_by_operation"].get("GetObject", 0)
    s3.get_model("m", "v1", dest)
    fetched = s3.stats()["endpoints"][0]["requests_by_operation"]["GetObject"] - gets
    assert fetched == 1 + len(files) - len(done)  # the manifest and the missing files only
    assert {n: (dest / n).read_bytes() for n in os.listdir(dest)} == files
    assert _temps(dest) == []
