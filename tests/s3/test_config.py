"""Credentials by the chain (explicit, AWS_*, S3_*, the credentials file), no placeholders,
the optional boto3, and the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ipfs_accelerate_api import backend
from ipfs_accelerate_api.backends.s3 import S3Backend
from ipfs_accelerate_api.errors import ConfigurationError

ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
       "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "S3_ACCESS_KEY", "S3_SECRET_KEY",
       "S3_ENDPOINT")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IPFS_ACCEL_CREDENTIALS", str(tmp_path / "no-credentials-file"))
    return monkeypatch


@pytest.fixture
def built():
    made = []

    def build(**options):
        options.setdefault("bucket", "b")
        b = backend("s3", **options)
        made.append(b)
        return b

    yield build
    for b in made:
        b.close()


def _access_key(s3) -> str:
    """The access key a backend signs with, read from a presigned URL (no request sent)."""
    url = s3.presigned_url("k")
    return url.split("X-Amz-Credential=")[1].split("%2F")[0]


def test_no_credentials_is_an_error_naming_where_they_may_come_from(clean_env) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend("s3", endpoint_url="http://127.0.0.1:9000", bucket="b")
    msg = str(info.value)
    for name in ("access_key", "secret_key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "S3_ACCESS_KEY", "S3_SECRET_KEY", ".ipfs_api_credentials"):
        assert name in msg


def test_half_a_pair_is_an_error_naming_the_missing_half(clean_env) -> None:
    clean_env.setenv("AWS_ACCESS_KEY_ID", "AKIA1")
    with pytest.raises(ConfigurationError, match="AWS_SECRET_ACCESS_KEY is missing"):
        backend("s3", endpoint_url="http://127.0.0.1:9000", bucket="b")
    with pytest.raises(ConfigurationError, match="secret_key is missing"):
        backend("s3", endpoint_url="http://127.0.0.1:9000", bucket="b", access_key="AKIA2")


def test_the_chain_explicit_then_aws_then_s3_then_the_file(clean_env, built, tmp_path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"s3": {"access_key": "FROMFILE", "secret_key": "s-file",
                                        "endpoint_url": "http://127.0.0.1:9004",
                                        "bucket": "file-bucket"}}))
    os.chmod(creds, 0o600)
    clean_env.setenv("IPFS_ACCEL_CREDENTIALS", str(creds))
    s3 = built(bucket=None)
    assert _access_key(s3) == "FROMFILE" and s3.bucket == "file-bucket"
    assert s3.stats()["endpoints"][0]["url"] == "http://127.0.0.1:9004"
    clean_env.setenv("S3_ACCESS_KEY", "FROMS3")
    clean_env.setenv("S3_SECRET_KEY", "s-s3")
    clean_env.setenv("S3_ENDPOINT", "http://127.0.0.1:9003")
    s3 = built()
    assert _access_key(s3) == "FROMS3" and "9003" in repr(s3)
    clean_env.setenv("AWS_ACCESS_KEY_ID", "FROMAWS")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "s-aws")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9002")
    s3 = built()
    assert _access_key(s3) == "FROMAWS" and "9002" in repr(s3)
    clean_env.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    assert "9001" in repr(built())
    s3 = built(access_key="EXPLICIT", secret_key="s-x", endpoint_url="http://127.0.0.1:9000")
    assert _access_key(s3) == "EXPLICIT" and "9000" in repr(s3)


def test_a_credentials_file_readable_by_others_is_refused(clean_env, tmp_path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"s3": {"access_key": "A", "secret_key": "S"}}))
    os.chmod(creds, 0o644)
    clean_env.setenv("IPFS_ACCEL_CREDENTIALS", str(creds))
    with pytest.raises(ConfigurationError, match="chmod 600"):
        backend("s3", endpoint_url="http://127.0.0.1:9000", bucket="b")


@pytest.mark.parametrize("options, match", [
    ({"bucket": None}, "bucket is required"),
    ({"strategy": "random"}, "strategy"),
    ({"replicate": "yes"}, "replicate"),
    ({"transfer": {"multipart_chunksize": 1024}}, "smallest part"),
    ({"transfer": {"parts": 3}}, "unknown field"),
    ({"endpoint_url": "ftp://host"}, "http"),
    ({"endpoint_url": "http://user:pw@host"}, "credentials"),
    ({"endpoints": []}, "non-empty"),
    ({"endpoints": ["http://127.0.0.1:1", "http://127.0.0.1:1"]}, "twice"),
    ({"endpoints": [{"url": "http://127.0.0.1:1", "acess_key": "typo"}]}, "unknown field"),
    ({"endpoints": ["http://127.0.0.1:1"], "endpoint_url": "http://127.0.0.1:2"}, "not both"),
    ({"max_concurrency": 0}, "max_concurrency"),
])
def test_bad_options_are_configuration_errors(clean_env, options, match) -> None:
    base = {"endpoint_url": "http://127.0.0.1:9000", "access_key": "A", "secret_key": "S",
            "bucket": "b"}
    if "endpoints" in options and "endpoint_url" not in options:
        base.pop("endpoint_url")
    with pytest.raises(ConfigurationError, match=match):
        backend("s3", **{**base, **options})


def test_the_names_it_is_registered_under(clean_env, built) -> None:
    for name in ("s3", "s3_kit"):
        with backend(name, endpoint_url="http://127.0.0.1:9000", access_key="A",
                     secret_key="S", bucket="b") as s3:
            assert isinstance(s3, S3Backend) and s3.name == "s3"


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)


def test_importing_the_package_or_any_backend_never_imports_boto3() -> None:
    code = ("import sys, importlib, ipfs_accelerate_api\n"
            "from ipfs_accelerate_api.backends import BACKENDS\n"
            "for target in set(BACKENDS.values()):\n"
            "    importlib.import_module(target.partition(':')[0])\n"
            "bad = sorted(m for m in ('boto3', 'botocore', 's3transfer') if m in sys.modules)\n"
            "print(bad); sys.exit(1 if bad else 0)")
    done = _python(code)
    assert done.returncode == 0, done.stdout + done.stderr


def test_without_boto3_the_error_names_the_extra() -> None:
    code = ("import sys; sys.modules['boto3'] = None\n"
            "from ipfs_accelerate_api import backend\n"
            "from ipfs_accelerate_api.errors import ConfigurationError\n"
            "try:\n"
            "    backend('s3', endpoint_url='http://127.0.0.1:9', access_key='a', "
            "secret_key='b', bucket='x')\n"
            "except ConfigurationError as exc:\n"
            "    print(exc); sys.exit(0)\n"
            "sys.exit(1)")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "pip install 'ipfs-accelerate-api[s3]'" in done.stdout
