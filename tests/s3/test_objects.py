"""Object round trips against moto's server: every operation, pagination, multipart in
parallel, presigned URLs used with plain urllib3, and the engine forms (submit, async)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
import urllib3

from ipfs_accelerate_api.errors import ClientClosed, IntegrityError, NotFoundError

from .conftest import ACCESS_KEY, SECRET_KEY

MiB = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(directory) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".part")]


def test_bytes_round_trip_head_exists_delete(make) -> None:
    s3 = make()
    data = b"weights \x00\xff" * 100
    assert s3.upload_bytes(data, "a/w.bin", metadata={"Format": "raw"}) == _sha(data)
    assert s3.download_bytes("a/w.bin") == data
    head = s3.head("a/w.bin")
    assert (head.key, head.size) == ("a/w.bin", len(data))
    assert head.sha256 == _sha(data) and head.metadata["format"] == "raw"
    assert head.etag == hashlib.md5(data).hexdigest() and head.last_modified is not None
    assert s3.exists("a/w.bin") and not s3.exists("a/other")
    s3.delete("a/w.bin")
    assert not s3.exists("a/w.bin")
    s3.delete("a/w.bin")  # absent: no error, as in S3
    with pytest.raises(NotFoundError):
        s3.head("a/w.bin")
    with pytest.raises(NotFoundError):
        s3.download_bytes("a/w.bin")


def test_file_round_trip_leaves_no_temporary_file(make, tmp_path) -> None:
    s3 = make()
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(300_000))
    assert s3.upload_file(src, "f/in.bin") == _sha(src.read_bytes())
    dest = tmp_path / "out" / "copy.bin"
    dest.parent.mkdir()
    s3.download_file("f/in.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert _leftovers(dest.parent) == []


def test_a_missing_object_leaves_nothing_at_the_destination(make, tmp_path) -> None:
    s3 = make()
    with pytest.raises(NotFoundError):
        s3.download_file("nope", tmp_path / "x.bin")
    assert os.listdir(tmp_path) == []


def test_a_missing_bucket_is_not_found(make) -> None:
    s3 = make(bucket="no-such-bucket-here")
    with pytest.raises(NotFoundError) as info:
        s3.download_bytes("k")
    assert info.value.code == "NoSuchBucket"


def test_multipart_over_64_mib_with_parts_in_parallel(make, proxy, tmp_path) -> None:
    """65 MiB goes up and comes down in 32 MiB parts, several at once (the proxy sees them
    overlap; each part is held a little so they must)."""
    proxy.add(method="PUT", path=r"partNumber=", delay=0.05)
    proxy.add(method="GET", path=r"^/[^?]+$", delay=0.05)
    s3 = make(endpoint_url=proxy.url)
    data = os.urandom(65 * MiB + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    sha = s3.upload_file(src, "big/model.bin")
    head = s3.head("big/model.bin")
    assert head.etag.endswith("-3")  # ceil(65 MiB / 32 MiB) parts: a multipart upload
    assert head.sha256 == sha == _sha(data)
    assert proxy.peak["PUT"] >= 2
    ops = s3.stats()["endpoints"][0]["requests_by_operation"]
    assert ops["UploadPart"] == 3 and ops["CompleteMultipartUpload"] == 1
    dest = tmp_path / "down.bin"
    s3.download_file("big/model.bin", dest)
    assert _sha(dest.read_bytes()) == sha
    assert s3.stats()["endpoints"][0]["requests_by_operation"]["GetObject"] == 3  # ranged
    assert proxy.peak["GET"] >= 2
    assert _leftovers(tmp_path) == []


def test_copy_keeps_the_checksum(make) -> None:
    s3 = make()
    s3.upload_bytes(b"config", "src.json")
    s3.copy("src.json", "dst.json")
    assert s3.head("dst.json").sha256 == _sha(b"config")
    assert s3.download_bytes("dst.json") == b"config"
    with pytest.raises(NotFoundError):
        s3.copy("absent.json", "x.json")


def test_copy_in_parts_keeps_the_checksum(make) -> None:
    """Above S3's single-request copy limit the transfer manager copies in parts; the
    limit is lowered here so a 12 MiB object takes that path."""
    s3 = make(transfer={"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB})
    s3._max_single_copy = 5 * MiB
    data = os.urandom(12 * MiB)
    s3.upload_bytes(data, "big.bin")
    s3.copy("big.bin", "big-copy.bin")
    head = s3.head("big-copy.bin")
    assert head.etag.endswith("-3") and head.sha256 == _sha(data)
    assert s3.download_bytes("big-copy.bin") == data


def test_list_pages_through_1200_objects(make, bucket, seed) -> None:
    keys = [f"many/{i:05d}" for i in range(1200)]
    seed(bucket, {k: b"x" * (i % 7) for i, k in enumerate(keys)})
    seed(bucket, {"other/a": b"", "manz": b""})
    s3 = make()
    it = s3.list("many/")
    first = next(it)
    assert first.key == keys[0] and first.size == 0 and first.etag
    assert s3.stats()["endpoints"][0]["requests_by_operation"]["ListObjectsV2"] == 1  # lazy
    rest = list(it)
    assert [first.key] + [o.key for o in rest] == keys
    assert [o.size for o in rest[:6]] == [1, 2, 3, 4, 5, 6]
    assert s3.stats()["endpoints"][0]["requests_by_operation"]["ListObjectsV2"] == 2
    assert len(list(s3.list())) == 1202
    assert list(s3.list("nothing/")) == []


def test_presigned_get_and_put_with_plain_urllib3(make) -> None:
    s3 = make()
    s3.upload_bytes(b"shared weights", "p/get.bin")
    http = urllib3.PoolManager()
    url = s3.presigned_url("p/get.bin", expires=60)
    assert "X-Amz-Signature=" in url and SECRET_KEY not in url
    resp = http.request("GET", url)
    assert resp.status == 200 and resp.data == b"shared weights"
    put = s3.presigned_url("p/put.bin", method="put", expires=60)
    assert http.request("PUT", put, body=b"from outside").status == 200
    assert s3.download_bytes("p/put.bin", verify=False) == b"from outside"
    with pytest.raises(IntegrityError, match="no recorded SHA-256"):
        s3.download_bytes("p/put.bin")  # a presigned PUT carries no checksum
    with pytest.raises(ValueError):
        s3.presigned_url("p/get.bin", expires=0)
    with pytest.raises(ValueError):
        s3.presigned_url("p/get.bin", method="delete")


def test_bad_arguments_fail_before_anything_is_sent(make, tmp_path) -> None:
    s3 = make()
    with pytest.raises(ValueError):
        s3.upload_bytes(b"x", "")
    with pytest.raises(TypeError):
        s3.upload_bytes("text, not bytes", "k")
    with pytest.raises(FileNotFoundError):
        s3.upload_file(tmp_path / "absent", "k")
    with pytest.raises(ValueError):
        s3.upload_bytes(b"x", "k", metadata={"sha256": "forged"})
    with pytest.raises(ValueError):
        s3.upload_bytes(b"x", "k", priority=7)
    assert s3.stats()["endpoints"][0]["requests"] == 0


def test_submit_async_and_close(make) -> None:
    s3 = make()
    futures = [s3.submit("upload_bytes", bytes([i]) * 10, f"s/{i}") for i in range(5)]
    assert [f.result(30) for f in futures] == [_sha(bytes([i]) * 10) for i in range(5)]
    assert s3.submit("list_models").result(30) == []

    async def main():
        await s3.aupload_bytes(b"async", "s/async")
        got = await s3.adownload_bytes("s/async")
        keys = [o.key async for o in s3.alist("s/")]
        return got, keys, await s3.aexists("s/async")

    got, keys, present = asyncio.run(main())
    assert got == b"async" and present and keys == ["s/0", "s/1", "s/2", "s/3", "s/4", "s/async"]
    stats = s3.stats()
    assert stats["succeeded"] >= 9 and stats["failed"] == 0 and stats["endpoints"][0]["errors"] == 0
    with s3:
        pass  # the context manager closes it
    with pytest.raises(ClientClosed):
        s3.upload_bytes(b"late", "s/late")


def test_repr_and_stats_show_urls_not_keys(make, moto_url, bucket) -> None:
    s3 = make()
    s3.upload_bytes(b"x", "k")
    text = repr(s3) + str(s3.stats())
    assert moto_url in text and bucket in text
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    ep = s3.stats()["endpoints"][0]
    assert ep["url"] == moto_url and ep["breaker"] == "CLOSED" and ep["requests"] == 1
