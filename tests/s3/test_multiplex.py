"""Several endpoints behind one backend: two moto servers in processes of their own (each its
own store); one is stopped mid-run."""

from __future__ import annotations

import threading
import time

import pytest

from ipfs_accelerate_api import BreakerPolicy, backend
from ipfs_accelerate_api.errors import NotFoundError

from .conftest import ACCESS_KEY, FAST_RETRY, SECRET_KEY, FaultProxy, raw_client, write_model

BUCKET = "shared"


@pytest.fixture
def pair(moto_processes):
    """(urls, raw clients) of the two servers, each with the bucket."""
    raws = [raw_client(p.url) for p in moto_processes]
    for r in raws:
        r.create_bucket(Bucket=BUCKET)
    return [p.url for p in moto_processes], raws


@pytest.fixture
def s3_over():
    made = []

    def build(urls, **options):
        options.setdefault("retry", FAST_RETRY)
        b = backend("s3", endpoints=[{"url": u, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
                                     for u in urls], bucket=BUCKET, **options)
        made.append(b)
        return b

    yield build
    for b in made:
        b.close()


def _keys(raw) -> set[str]:
    return {c["Key"] for c in raw.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def _puts(s3) -> list[int]:
    return [e["requests_by_operation"].get("PutObject", 0) for e in s3.stats()["endpoints"]]


def test_round_robin_spreads_requests(pair, s3_over) -> None:
    urls, raws = pair
    s3 = s3_over(urls)
    for i in range(10):
        s3.upload_bytes(b"x", f"k{i}")
    assert _puts(s3) == [5, 5]
    assert len(_keys(raws[0])) == len(_keys(raws[1])) == 5
    assert [e["url"] for e in s3.stats()["endpoints"]] == urls


def test_least_loaded_avoids_the_busy_endpoint(pair, s3_over) -> None:
    urls, raws = pair
    slow = FaultProxy(urls[0])
    try:
        slow.add(method="PUT", path=r"/slow$", delay=1.5)
        s3 = s3_over([slow.url, urls[1]], strategy="least_loaded")
        busy = threading.Thread(target=s3.upload_bytes, args=(b"x", "slow"))
        busy.start()
        while slow.seen[f"PUT /{BUCKET}/slow"] == 0:  # it is in flight on the first endpoint
            time.sleep(0.01)
        for i in range(4):
            s3.upload_bytes(b"x", f"k{i}")
        busy.join()
        assert _puts(s3) == [1, 4]  # round robin would have sent two of the four there
        assert _keys(raws[0]) == {"slow"}
    finally:
        slow.close()


def test_failover_when_an_endpoint_stops_mid_run(pair, s3_over, moto_processes) -> None:
    urls, raws = pair
    s3 = s3_over(urls, breaker=BreakerPolicy(failure_threshold=2, recovery_timeout=60))
    for i in range(20):
        if i == 6:
            moto_processes[0].stop()
        s3.upload_bytes(b"x", f"k{i}")  # not one fails
    after = {f"k{i}" for i in range(6, 20)}
    assert after <= _keys(raws[1])  # every upload after the stop landed on the live one
    a, b = s3.stats()["endpoints"]
    assert a["errors"] >= 1 and a["errors_by_class"] == {"APIConnectionError": a["errors"]}
    assert a["breaker"] == "OPEN" and b["breaker"] == "CLOSED" and b["errors"] == 0
    assert s3.stats()["failed"] == 0


def test_replicate_writes_to_both_and_loses_nothing_when_one_stops(pair, s3_over,
                                                                   moto_processes, tmp_path) -> None:
    urls, raws = pair
    s3 = s3_over(urls, replicate=True,
                 breaker=BreakerPolicy(failure_threshold=2, recovery_timeout=60))
    for i in range(6):
        s3.upload_bytes(f"v{i}".encode(), f"k{i}")
    write_model(tmp_path / "m", {"a.txt": b"a", "b/c.txt": b"c"})
    s3.put_model(tmp_path / "m", "m", "v1")
    for r in raws:
        keys = _keys(r)
        assert {f"k{i}" for i in range(6)} <= keys and "m/v1/manifest.json" in keys
        assert r.head_object(Bucket=BUCKET, Key="k0")["Metadata"]["sha256"]
    moto_processes[0].stop()
    for i in range(6, 12):
        s3.upload_bytes(f"v{i}".encode(), f"k{i}")
    for i in range(12):  # nothing lost: every object is still there
        assert s3.download_bytes(f"k{i}") == f"v{i}".encode()
    s3.get_model("m", "v1", tmp_path / "dest")
    assert (tmp_path / "dest" / "b" / "c.txt").read_bytes() == b"c"
    assert s3.list_models() == [("m", "v1")]
    a = s3.stats()["endpoints"][0]
    assert a["missed_writes"] == 6 and a["breaker"] == "OPEN"
    assert s3.stats()["failed"] == 0


def test_replicated_reads_come_from_any_endpoint_that_has_the_object(pair, s3_over) -> None:
    urls, raws = pair
    s3 = s3_over(urls, replicate=True)
    s3.upload_bytes(b"both", "k")
    raws[0].delete_object(Bucket=BUCKET, Key="k")  # gone from one
    meta = raws[1].head_object(Bucket=BUCKET, Key="k")["Metadata"]
    raws[1].put_object(Bucket=BUCKET, Key="bad", Body=b"corrupt", Metadata=meta)  # bad on one
    raws[0].put_object(Bucket=BUCKET, Key="bad", Body=b"both", Metadata=meta)
    for _ in range(4):  # whichever endpoint comes first
        assert s3.download_bytes("k") == b"both" and s3.exists("k")
        assert s3.download_bytes("bad") == b"both"
    raws[1].put_object(Bucket=BUCKET, Key="only-on-b", Body=b"")
    assert [o.key for o in s3.list()] == ["bad", "k", "only-on-b"]  # the listings merged
    s3.delete("k")
    assert not s3.exists("k")
    with pytest.raises(NotFoundError):
        s3.download_bytes("k")
