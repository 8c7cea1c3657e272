"""S3 errors mapped into the package's hierarchy and retried (or not) by the engine; the
breaker; checksum corruption; and the secret key never shown."""

from __future__ import annotations

import json
import logging
import os
import traceback

import pytest

from ipfs_accelerate_api import BreakerPolicy, RetryPolicy, backend
from ipfs_accelerate_api.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
)

from .conftest import FAST_RETRY, free_port

MiB = 1 << 20


@pytest.mark.parametrize("status, code, cls, retried", [
    (503, "SlowDown", ServerError, True),
    (500, "InternalError", ServerError, True),
    (503, "ServiceUnavailable", ServerError, True),
    (403, "AccessDenied", PermissionDeniedError, False),
    (403, "InvalidAccessKeyId", AuthenticationError, False),
    (403, "SignatureDoesNotMatch", AuthenticationError, False),
    (400, "EntityTooLarge", BadRequestError, False),
    (404, "NoSuchBucket", NotFoundError, False),
])
def test_s3_errors_map_and_retry_as_the_issue_says(make, proxy, bucket, status, code, cls, retried) -> None:
    proxy.add(method="PUT", path=rf"^/{bucket}/k$", status=status, code=code)
    s3 = make(endpoint_url=proxy.url)
    with pytest.raises(cls) as info:
        s3.upload_bytes(b"data", "k")
    err = info.value
    assert err.code == code and err.status == status and err.backend == "s3"
    assert proxy.seen[f"PUT /{bucket}/k"] == (1 + FAST_RETRY.max_retries if retried else 1)
    proxy.rules.clear()
    # Nothing was disabled by a refusal: the next request goes through.
    assert s3.upload_bytes(b"data", "k")
    assert s3.download_bytes("k") == b"data"


def test_slowdown_is_retried_until_it_passes(make, proxy, bucket) -> None:
    proxy.add(method="PUT", path=rf"^/{bucket}/k$", status=503, code="SlowDown", times=2)
    s3 = make(endpoint_url=proxy.url)
    s3.upload_bytes(b"data", "k")
    stats = s3.stats()
    assert stats["retried"] == 2 and stats["succeeded"] == 1
    assert stats["endpoints"][0]["errors_by_class"] == {"ServerError": 2}
    assert proxy.seen[f"PUT /{bucket}/k"] == 3


def test_head_of_a_missing_key_is_not_found_from_the_bare_404(make) -> None:
    s3 = make()
    with pytest.raises(NotFoundError) as info:
        s3.head("missing")
    assert info.value.code == "404"
    assert s3.exists("missing") is False
    assert s3.stats()["retried"] == 0


def test_a_refused_connection_is_a_connection_error_retried(make, bucket) -> None:
    s3 = make(endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(APIConnectionError):
        s3.upload_bytes(b"x", "k")
    stats = s3.stats()
    assert stats["retried"] == FAST_RETRY.max_retries
    assert stats["endpoints"][0]["errors_by_class"] == {"APIConnectionError": 4}


def test_the_endpoint_breaker_opens_and_fails_fast(make, proxy, bucket) -> None:
    proxy.add(method="PUT", status=500, code="InternalError")
    s3 = make(endpoint_url=proxy.url, retry=RetryPolicy(max_retries=0),
              breaker=BreakerPolicy(failure_threshold=2, recovery_timeout=60))
    for _ in range(2):
        with pytest.raises(ServerError):
            s3.upload_bytes(b"x", "k")
    assert s3.stats()["endpoints"][0]["breaker"] == "OPEN"
    sent = proxy.seen[f"PUT /{bucket}/k"]
    with pytest.raises(CircuitOpenError):
        s3.upload_bytes(b"x", "k")
    assert proxy.seen[f"PUT /{bucket}/k"] == sent  # refused without sending


# -- checksums --------------------------------------------------------------------------------
def _overwrite_keeping_metadata(raw, bucket: str, key: str, data: bytes) -> None:
    """Replace an object's bytes behind the client's back, keeping its old metadata."""
    meta = raw.head_object(Bucket=bucket, Key=key)["Metadata"]
    raw.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta)


@pytest.mark.parametrize("size", [1000, 6 * MiB], ids=["one-request", "in-parts"])
def test_corruption_is_detected_and_nothing_is_written(make, raw, bucket, tmp_path, size) -> None:
    s3 = make(transfer={"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB})
    good = os.urandom(size)
    sha = s3.upload_bytes(good, "w.bin")
    _overwrite_keeping_metadata(raw, bucket, "w.bin", good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(IntegrityError) as info:
        s3.download_bytes("w.bin")
    assert info.value.expected == sha and info.value.actual != sha and info.value.key == "w.bin"
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"the previous good copy")
    with pytest.raises(IntegrityError):
        s3.download_file("w.bin", dest)
    assert dest.read_bytes() == b"the previous good copy"  # untouched
    assert os.listdir(tmp_path) == ["w.bin"]  # and no temporary file left
    assert s3.stats()["retried"] == 0  # the same object gives the same bytes: not retried


def test_an_object_without_a_checksum_is_refused_unless_asked(make, raw, bucket, tmp_path) -> None:
    raw.put_object(Bucket=bucket, Key="foreign", Body=b"from elsewhere")
    s3 = make()
    with pytest.raises(IntegrityError, match="verify=False"):
        s3.download_file("foreign", tmp_path / "f")
    assert not (tmp_path / "f").exists()
    s3.download_file("foreign", tmp_path / "f", verify=False)
    assert (tmp_path / "f").read_bytes() == b"from elsewhere"


# -- the key-leak canary ----------------------------------------------------------------------
SECRET_CANARY = "CANARY-secret-5b7e2f19d04c"
TOKEN_CANARY = "CANARY-token-a81c33e7"


def test_the_secret_key_never_shows(make, proxy, bucket, tmp_path, caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)  # botocore's and ours, every level
    seen: list[str] = []

    def record(exc: BaseException) -> None:
        seen.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
        for attr in ("body", "headers"):
            seen.append(json.dumps(getattr(exc, attr, None), default=str))

    proxy.add(method="PUT", path=r"/denied$", status=403, code="AccessDenied")
    s3 = make(endpoints=[{"url": proxy.url, "access_key": "AKIACANARYACCESS",
                          "secret_key": SECRET_CANARY, "session_token": TOKEN_CANARY},
                         {"url": f"http://127.0.0.1:{free_port()}", "access_key": "AKIA2",
                          "secret_key": SECRET_CANARY + "-2"}])
    s3.upload_bytes(b"ok", "fine")
    assert s3.download_bytes("fine") == b"ok"
    for call in (lambda: s3.upload_bytes(b"x", "denied"), lambda: s3.download_bytes("absent"),
                 lambda: s3.download_file("absent", tmp_path / "a")):
        with pytest.raises(Exception) as info:
            call()
        record(info.value)
    seen += [repr(s3), json.dumps(s3.stats(), default=str)]
    urls = [s3.presigned_url("fine"), s3.presigned_url("fine", method="put")]
    # Configuration errors: a half pair and an unknown field.
    for name in ("AWS_ACCESS_KEY_ID", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_CANARY)
    for bad in ({"bucket": "b", "endpoint_url": proxy.url},
                {"bucket": "b", "endpoints": [{"url": proxy.url, "secret_key": SECRET_CANARY,
                                               "password": SECRET_CANARY}]}):
        with pytest.raises(ConfigurationError) as info:
            backend("s3", **bad)
        record(info.value)
    assert caplog.text  # botocore did log at debug level
    for i, text in enumerate(seen):
        assert SECRET_CANARY not in text and TOKEN_CANARY not in text, i
    # A session token travels in presigned URLs (that is how they work with temporary
    # credentials) and botocore logs the canonical request with it at debug level; the
    # secret key itself never leaves the process.
    for text in urls + [caplog.text]:
        assert SECRET_CANARY not in text
