"""S3 Kit: models and files on S3-compatible servers (AWS S3, MinIO, Ceph, R2, moto).

    with backend("s3", endpoint_url="http://127.0.0.1:9000", access_key="...",
                 secret_key="...", bucket="models") as s3:
        s3.put_model("./bert", "bert-base", "v1")
        s3.get_model("bert-base", "v1", "/srv/models/bert")

Every public call is one engine request (queue, priority, concurrency limit, retries, the
breaker, tracking); its operation is the boto3 call. boto3 retries nothing itself (one
attempt, one retry policy: ours). Below the engine sits the endpoint layer: each endpoint has
its own boto3 client (created once; clients are thread-safe), its own transfer manager and its
own circuit breaker. A request goes to one endpoint (``round_robin`` or ``least_loaded``) and
fails over to the next healthy one on a connection error, a 5xx or ``SlowDown``. With
``replicate=True`` writes go to every endpoint (they succeed when one took them; a missed
write is counted in that endpoint's stats) and reads try each until one has the object.

Every upload records the content's SHA-256 in the object's metadata (``x-amz-meta-sha256``);
every download checks it (:class:`~ipfs_accelerate_api.errors.IntegrityError` on a mismatch)
before the file is renamed into place. Files from the multipart threshold up go through
boto3's transfer manager, parts in parallel. The model layout is in :mod:`._s3_models`.

boto3 is imported when an S3 backend is created, never before (``pip install
'ipfs-accelerate-api[s3]'``).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import heapq
import io
import itertools
import json
import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Sequence

from .._enums import Priority
from ..config import (
    DEFAULT_CREDENTIALS_FILE,
    BreakerPolicy,
    RetryPolicy,
    Secret,
    Timeouts,
    _file_entry,
    check_header_value,
    coerce_option,
)
from ..core import CircuitBreaker
from ..engine import Attempt, Engine, check_priority
from ..engine.keys import KeyPool
from ..engine.retry import counts_against_breaker
from ..errors import (
    AcceleratorError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    UnsupportedOperation,
    status_error_class,
)
from . import _s3_models as layout
from .base import REDACTED, _check_base_url, _check_count, _check_limit, _key_pattern

__all__ = ["S3Backend", "S3Object"]

log = logging.getLogger("ipfs_accelerate_api.s3")

MiB = 1 << 20
DEFAULT_BUCKET_REGION = "us-east-1"
#: Objects from this size up are sent and fetched in parts, in parallel. 32 MiB parts (boto3:
#: 8 MiB) mean a quarter of the requests: on moto, 256 MiB came down 2.7x faster than in 8 MiB
#: ranges (each ranged GET costs it the whole object) and went up as fast; S3 and MinIO take
#: parts up to 5 GiB, and the part count stays under 10,000 (the transfer manager widens them).
DEFAULT_MULTIPART_THRESHOLD = 32 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 32 * MiB
#: Parts in flight at once, per endpoint (shared by the transfers running on it).
DEFAULT_TRANSFER_CONCURRENCY = 10
DEFAULT_IO_CHUNKSIZE = 1 * MiB
#: S3's smallest part (all but the last) and its largest single-request copy.
MIN_PART_SIZE = 5 * MiB
MAX_SINGLE_COPY = 5 * 1024 * MiB
#: Most keys one DeleteObjects request takes.
DELETE_BATCH = 1000
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: How long a cancelled transfer is given to stop its threads.
CANCEL_GRACE = 5.0
SHA_META = "sha256"

_ENV_KEYS = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
             ("S3_ACCESS_KEY", "S3_SECRET_KEY", None))
_ENV_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT")
_ENV_REGIONS = ("AWS_DEFAULT_REGION", "AWS_REGION")
_ENDPOINT_FIELDS = frozenset({"url", "endpoint_url", "access_key", "secret_key",
                              "session_token", "region"})
_TRANSFER_FIELDS = ("multipart_threshold", "multipart_chunksize", "max_concurrency",
                    "io_chunksize")

# S3 error codes -> the package's classes (status decides for any other code).
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NoSuchVersion",
                        "NotFound", "404"})
_AUTH = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                   "InvalidToken", "TokenRefreshRequired", "InvalidSecurity"})
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_BAD_REQUEST = frozenset({"EntityTooLarge", "EntityTooSmall", "InvalidArgument",
                          "InvalidRequest", "InvalidBucketName", "KeyTooLongError",
                          "MetadataTooLarge", "InvalidPart", "InvalidPartOrder",
                          "MalformedXML", "InvalidDigest", "BadDigest"})
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests",
                        "RequestLimitExceeded", "ServiceUnavailable"})


@dataclass(frozen=True)
class S3Object:
    """One object: what ``list`` yields (``metadata`` None there) and ``head`` returns."""

    key: str
    size: int
    etag: str | None
    last_modified: datetime | None
    metadata: Mapping[str, str] | None = field(default=None, compare=False)

    @property
    def sha256(self) -> str | None:
        """The SHA-256 recorded at upload (None if unknown or not uploaded by this package)."""
        return (self.metadata or {}).get(SHA_META)


def _etag(value: Any) -> str | None:
    return value.strip('"') if isinstance(value, str) else None


class _Boto:
    """boto3 and the bits of it this module uses, imported on first use."""

    _lock = threading.Lock()
    _loaded: "_Boto | None" = None

    def __init__(self) -> None:
        try:
            import boto3
            import boto3.s3.transfer as transfer
            import botocore.config
            import botocore.exceptions as exc
            from s3transfer.exceptions import RetriesExceededError
            from s3transfer.subscribers import BaseSubscriber
        except ImportError as err:
            raise ConfigurationError(
                "the s3 backend needs boto3: pip install 'ipfs-accelerate-api[s3]'") from err
        self.session = boto3.session.Session()  # one loader for every client (created locked)
        self.Config = botocore.config.Config
        self.TransferConfig = transfer.TransferConfig
        self.create_transfer_manager = transfer.create_transfer_manager
        self.ClientError = exc.ClientError
        self.connect_timeouts = (exc.ConnectTimeoutError, exc.ReadTimeoutError)
        self.connection_errors = (exc.ConnectionError, exc.HTTPClientError,
                                  exc.IncompleteReadError)
        self.RetriesExceeded = RetriesExceededError

        class Watch(BaseSubscriber):  # type: ignore[misc]
            """Tells the transfer what is already known and signals when it is done."""

            def __init__(self, size: int | None = None, etag: str | None = None) -> None:
                self.size, self.etag, self.done = size, etag, threading.Event()

            def on_queued(self, future: Any, **kwargs: Any) -> None:
                if self.size is not None:
                    future.meta.provide_transfer_size(self.size)
                if self.etag is not None:
                    future.meta.provide_object_etag(self.etag)

            def on_done(self, future: Any, **kwargs: Any) -> None:
                self.done.set()

        self.Watch = Watch

    @classmethod
    def get(cls) -> "_Boto":
        with cls._lock:
            if cls._loaded is None:
                cls._loaded = cls()
            return cls._loaded

    def client(self, **kwargs: Any) -> Any:
        with self._lock:  # a boto3 Session is not thread-safe; its clients are
            return self.session.client("s3", **kwargs)


class _S3KeyPool(KeyPool):
    """The engine's key pool for S3: one anonymous slot (an endpoint's credentials live in its
    client). An AccessDenied on one object says nothing about the credentials, so nothing is
    disabled, and there is no other key to try, so it is never retried either."""

    def disable(self, key: Any, reason: str) -> None:
        pass

    def available(self) -> int:
        return 0


@dataclass
class _Credentials:
    access_key: str
    secret: Secret
    token: Secret | None
    source: str


def _pair(access: Any, secret: Any, token: Any, names: tuple[str, str], source: str) -> _Credentials | None:
    if not access and not secret:
        return None
    if not access or not secret:
        missing = names[0] if not access else names[1]
        raise ConfigurationError(f"s3: {source} gives only half of the credentials: "
                                 f"{missing} is missing")
    for value, what in ((access, names[0]), (secret, names[1])):
        if not isinstance(value, str):
            raise ConfigurationError(f"s3: {what} must be a string, got {type(value).__name__}")
        check_header_value(value, f"s3: {what} (from {source})")
    return _Credentials(access.strip(), Secret(secret, "s3-secret-key"),
                        Secret(token, "s3-session-token") if token else None, source)


def _file_section(env: Mapping[str, str]) -> dict[str, Any]:
    """The credentials file's ``"s3"`` entry (the shared reader checks the file's
    permissions and JSON first)."""
    found = _file_entry("s3", env)
    if found is None:
        return {}
    path = found[2]
    with open(path, encoding="utf-8") as fh:
        entry = json.load(fh).get("s3")
    if not isinstance(entry, dict):
        raise ConfigurationError(f"credentials file {path}: entry 's3' must be an object with "
                                 "access_key, secret_key and optionally endpoint_url, region, "
                                 "bucket")
    return entry


def _resolve(endpoints: Any, endpoint_url: Any, access_key: Any, secret_key: Any,
             session_token: Any, region: Any, bucket: Any,
             env: Mapping[str, str]) -> tuple[list[dict[str, Any]], str]:
    """The endpoints (url, credentials, region each) and the bucket, by the chain: explicit,
    then ``AWS_*``, then ``S3_*``, then the credentials file's ``"s3"`` entry."""
    if endpoints is not None and endpoint_url is not None:
        raise ConfigurationError("s3: pass endpoints=[...] or endpoint_url=..., not both")
    explicit = _pair(access_key, secret_key, session_token, ("access_key", "secret_key"),
                     "the arguments")
    file: dict[str, Any] | None = None

    def from_file() -> dict[str, Any]:
        nonlocal file
        if file is None:
            file = _file_section(env)
        return file

    def credentials() -> _Credentials:
        if explicit is not None:
            return explicit
        for access, secret, token in _ENV_KEYS:
            found = _pair(env.get(access, "").strip(), env.get(secret, "").strip(),
                          env.get(token, "").strip() if token else None, (access, secret),
                          "the environment")
            if found is not None:
                return found
        f = from_file()
        found = _pair(f.get("access_key"), f.get("secret_key"), f.get("session_token"),
                      ("access_key", "secret_key"), f"{DEFAULT_CREDENTIALS_FILE} entry 's3'")
        if found is not None:
            return found
        raise ConfigurationError(
            "no credentials for s3: pass access_key=... and secret_key=... (or per endpoint in "
            "endpoints=[{'url': ..., 'access_key': ..., 'secret_key': ...}]), or set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or S3_ACCESS_KEY and S3_SECRET_KEY, "
            f"or add an 's3' entry with access_key and secret_key to {DEFAULT_CREDENTIALS_FILE}")

    def default_region() -> str:
        if region:
            return str(region)
        for name in _ENV_REGIONS:
            if env.get(name, "").strip():
                return env[name].strip()
        return str(from_file().get("region") or DEFAULT_BUCKET_REGION)

    if endpoints is None:
        url = endpoint_url
        if url is None:
            url = next((env[n].strip() for n in _ENV_ENDPOINTS if env.get(n, "").strip()), None)
        if url is None:
            url = from_file().get("endpoint_url") or from_file().get("url")
        endpoints = [{"url": url}]
    elif isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Sequence) or not endpoints:
        raise ConfigurationError("s3: endpoints must be a non-empty list of "
                                 "{'url': ..., 'access_key': ..., 'secret_key': ...}")
    out = []
    for i, spec in enumerate(endpoints):
        if isinstance(spec, str):
            spec = {"url": spec}
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"s3: endpoints[{i}] must be a mapping or a URL string")
        unknown = sorted(str(k) for k in spec if k not in _ENDPOINT_FIELDS)
        if unknown:
            raise ConfigurationError(f"s3: endpoints[{i}]: unknown field(s) {unknown}; "
                                     f"known: {sorted(_ENDPOINT_FIELDS)}")
        url = spec.get("url", spec.get("endpoint_url"))
        if url is not None:
            url = _check_base_url(f"s3 endpoints[{i}]", url)
        creds = _pair(spec.get("access_key"), spec.get("secret_key"), spec.get("session_token"),
                      (f"endpoints[{i}]['access_key']", f"endpoints[{i}]['secret_key']"),
                      "the arguments") or credentials()
        out.append({"url": url, "credentials": creds,
                    "region": str(spec.get("region") or default_region())})
    if len({e["url"] for e in out}) != len(out):
        raise ConfigurationError("s3: the same endpoint URL is listed twice")
    if bucket is None:
        bucket = from_file().get("bucket")
    if not isinstance(bucket, str) or not bucket.strip():
        raise ConfigurationError("s3: bucket is required: pass bucket='...'")
    return out, bucket.strip()


def _transfer_options(transfer: Any) -> dict[str, int]:
    opts = {"multipart_threshold": DEFAULT_MULTIPART_THRESHOLD,
            "multipart_chunksize": DEFAULT_MULTIPART_CHUNKSIZE,
            "max_concurrency": DEFAULT_TRANSFER_CONCURRENCY, "io_chunksize": DEFAULT_IO_CHUNKSIZE}
    if transfer is None:
        return opts
    if isinstance(transfer, Mapping):
        unknown = sorted(str(k) for k in transfer if k not in _TRANSFER_FIELDS)
        if unknown:
            raise ConfigurationError(f"s3: transfer: unknown field(s) {unknown}; "
                                     f"known: {list(_TRANSFER_FIELDS)}")
        given = dict(transfer)
    elif all(hasattr(transfer, f) for f in _TRANSFER_FIELDS):  # a boto3 TransferConfig
        given = {f: getattr(transfer, f) for f in _TRANSFER_FIELDS}
    else:
        raise TypeError("s3: transfer must be a mapping of "
                        f"{', '.join(_TRANSFER_FIELDS)} or a boto3 TransferConfig")
    for name, value in given.items():
        opts[name] = _check_count(f"transfer[{name!r}]", value)
    if opts["multipart_chunksize"] < MIN_PART_SIZE:
        raise ConfigurationError(f"s3: transfer['multipart_chunksize'] must be at least "
                                 f"{MIN_PART_SIZE} (S3's smallest part), got {opts['multipart_chunksize']}")
    return opts


class _Endpoint:
    """One server: its client, transfer manager, breaker and counters."""

    def __init__(self, url: str, client: Any, manager: Any, breaker: CircuitBreaker) -> None:
        self.url = url
        self.client = client
        self.manager = manager
        self.breaker = breaker
        self._lock = threading.Lock()
        self.in_flight = 0
        self.calls = 0
        self.errors = 0
        self.missed_writes = 0
        self.requests: Counter[str] = Counter()  # HTTP requests sent, by S3 operation
        self.error_classes: Counter[str] = Counter()
        client.meta.events.register("before-send.s3", self._sent)

    def _sent(self, event_name: str = "", **kwargs: Any) -> None:
        with self._lock:
            self.requests[event_name.rpartition(".")[2]] += 1

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.calls += 1

    def end(self, exc: AcceleratorError | None) -> None:
        with self._lock:
            self.in_flight -= 1
            if exc is not None:
                self.errors += 1
                self.error_classes[type(exc).__name__] += 1
        if exc is not None and counts_against_breaker(exc):
            self.breaker.record_failure()
        else:
            self.breaker.record_success()

    def missed(self) -> None:
        with self._lock:
            self.missed_writes += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"url": self.url, "requests": sum(self.requests.values()),
                    "requests_by_operation": dict(self.requests), "calls": self.calls,
                    "errors": self.errors, "errors_by_class": dict(self.error_classes),
                    "in_flight": self.in_flight, "missed_writes": self.missed_writes,
                    "breaker": self.breaker.state.name, "breaker_stats": self.breaker.stats()}


def _fails_over(exc: BaseException) -> bool:
    """The endpoint, not the request, failed: another endpoint may do better."""
    return isinstance(exc, (APIConnectionError, ServerError, RateLimitError))


#: The methods that run many engine requests (the caller's thread drives them).
_COMPOSITE = frozenset({"put_model", "get_model", "delete_model", "list_models"})


class S3Backend:
    """Objects and models in one bucket on one or more S3-compatible endpoints.

    Options (keyword-only): ``endpoints=[{"url", "access_key", "secret_key", "session_token",
    "region"}, ...]`` or, for one endpoint, ``endpoint_url=``, ``access_key=``,
    ``secret_key=``, ``session_token=``, ``region=``; ``bucket``; ``strategy``
    (``"round_robin"`` or ``"least_loaded"``: fewest requests in flight); ``replicate``;
    ``max_concurrency``, ``queue_size``, ``overflow``, ``rpm``, ``retry``, ``breaker`` (one
    breaker per endpoint, and one for the whole backend in the engine), ``timeout`` (its
    ``connect`` and ``read``), ``transfer`` (``multipart_threshold``, ``multipart_chunksize``,
    ``max_concurrency`` parts in flight per endpoint, ``io_chunksize``), ``verify`` (TLS),
    ``on_request_end``.

    Credentials, first hit wins: the arguments, then ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), then ``S3_ACCESS_KEY`` /
    ``S3_SECRET_KEY``, then the credentials file's ``"s3"`` entry. The endpoint likewise:
    ``endpoint_url``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, ``S3_ENDPOINT``, the file
    (none at all: AWS itself). There are no default credentials.
    """

    name = "s3"
    requires_key = True

    @classmethod
    def configured_keys(cls, env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """(access key id, where it came from) as the credentials chain would find them
        without arguments (``ipfs-accel keys``): the environment's pairs, then the
        credentials file's ``"s3"`` entry. Secret keys are never returned."""
        env = os.environ if env is None else env
        for access, secret, _ in _ENV_KEYS:
            if env.get(access, "").strip() and env.get(secret, "").strip():
                return [(env[access].strip(), access)]
        found = _file_entry("s3", env)
        if found is not None:
            entry = _file_section(env)
            if entry.get("access_key") and entry.get("secret_key"):
                return [(str(entry["access_key"]), found[2])]
        return []

    def __init__(
        self,
        *,
        endpoints: Sequence[Mapping[str, Any] | str] | None = None,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        bucket: str | None = None,
        strategy: str = "round_robin",
        replicate: bool = False,
        max_concurrency: int = 8,
        queue_size: int = 10_000,
        overflow: str = "block",
        rpm: float | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        breaker: BreakerPolicy | Mapping[str, Any] | None = None,
        timeout: Timeouts | Mapping[str, Any] | None = None,
        transfer: Any = None,
        verify: bool = True,
        on_request_end: Callable[[Any], Any] | None = None,
    ) -> None:
        specs, self.bucket = _resolve(endpoints, endpoint_url, access_key, secret_key,
                                      session_token, region, bucket, os.environ)
        if strategy not in ("round_robin", "least_loaded"):
            raise ConfigurationError(f"s3: strategy must be 'round_robin' or 'least_loaded', "
                                     f"got {strategy!r}")
        if not isinstance(replicate, bool):
            raise ConfigurationError("s3: replicate must be True or False")
        _check_count("max_concurrency", max_concurrency)
        _check_count("queue_size", queue_size)
        retry = coerce_option(retry, RetryPolicy, "retry")
        bp = coerce_option(breaker, BreakerPolicy, "breaker") or BreakerPolicy()
        timeouts = coerce_option(timeout, Timeouts, "timeout") or Timeouts()
        self._transfer = _transfer_options(transfer)
        self.strategy = strategy
        self.replicate = replicate
        secrets_ = [s["credentials"].secret for s in specs]
        secrets_ += [s["credentials"].token for s in specs if s["credentials"].token]
        self._key_pattern = _key_pattern(secrets_)
        boto = self._boto = _Boto.get()
        tc = boto.TransferConfig(
            multipart_threshold=self._transfer["multipart_threshold"],
            multipart_chunksize=self._transfer["multipart_chunksize"],
            max_concurrency=self._transfer["max_concurrency"],
            io_chunksize=self._transfer["io_chunksize"],
            num_download_attempts=1, use_threads=True, preferred_transfer_client="classic")
        self._endpoints: builtins.list[_Endpoint] = []
        try:
            for s in specs:
                creds: _Credentials = s["credentials"]
                config = boto.Config(
                    region_name=s["region"],
                    s3={"addressing_style": "path" if s["url"] else "auto"},
                    retries={"total_max_attempts": 1, "mode": "standard"},  # no retry: ours
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    connect_timeout=timeouts.connect, read_timeout=timeouts.read,
                    max_pool_connections=max_concurrency + self._transfer["max_concurrency"],
                    signature_version="s3v4", user_agent_extra="ipfs-accelerate-api")
                client = boto.client(
                    endpoint_url=s["url"], region_name=s["region"],
                    aws_access_key_id=creds.access_key,
                    aws_secret_access_key=creds.secret.reveal(),
                    aws_session_token=creds.token.reveal() if creds.token else None,
                    verify=verify, config=config)
                url = s["url"] or f"https://s3.{s['region']}.amazonaws.com"
                self._endpoints.append(_Endpoint(
                    url, client, boto.create_transfer_manager(client, tc),
                    CircuitBreaker(bp.failure_threshold, bp.recovery_timeout,
                                   bp.half_open_max_calls, bp.success_threshold)))
        except AcceleratorError:
            raise
        except Exception as exc:  # a bad region, a profile that does not exist...
            raise ConfigurationError(f"s3: cannot create the client: {type(exc).__name__}: "
                                     f"{self._redact(str(exc))}") from None
        self._rr = itertools.count()
        self._engine = Engine(
            self.name, max_concurrency=max_concurrency, queue_size=queue_size,
            overflow=overflow, retry=retry, breaker=bp, on_request_end=on_request_end,
            key_pool=_S3KeyPool((), rpm=_check_limit("rpm", rpm)))

    def __repr__(self) -> str:
        urls = ", ".join(e.url for e in self._endpoints)
        return (f"<S3Backend bucket={self.bucket!r} endpoints=[{urls}]"
                f"{' replicate' if self.replicate else ''}"
                f"{' closed' if self._engine.closed else ''}>")

    # -- errors -------------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        pattern = self._key_pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def _map(self, exc: BaseException, ep: _Endpoint, what: str) -> AcceleratorError | None:
        """A boto3 / botocore / s3transfer failure as the package's error (None: not one)."""
        boto = self._boto
        if isinstance(exc, boto.RetriesExceeded) and exc.last_exception is not None:
            exc = exc.last_exception
        where = f"{what} on {ep.url}"
        if isinstance(exc, boto.ClientError):
            err = exc.response.get("Error", {}) or {}
            meta = exc.response.get("ResponseMetadata", {}) or {}
            code = str(err.get("Code") or "")
            status = int(meta.get("HTTPStatusCode") or 0) or None
            headers = {k: self._redact(str(v)) for k, v in (meta.get("HTTPHeaders") or {}).items()}
            message = self._redact(f"s3: {code or status}: {err.get('Message') or ''} ({where})")
            kwargs: dict[str, Any] = dict(status=status, request_id=meta.get("RequestId") or None,
                          backend=self.name, code=code or None, headers=headers,
                          body={k: self._redact(str(v)) for k, v in err.items()})
            if code in _NOT_FOUND or status == 404:
                return NotFoundError(message, **{**kwargs, "status": 404})
            if code in _AUTH:
                return AuthenticationError(message, **kwargs)
            if code in _DENIED:
                return PermissionDeniedError(message, **kwargs)
            if code in _THROTTLED:
                cls = RateLimitError if status == 429 else ServerError
                return cls(message, **{**kwargs, "status": status or 503})
            if code in _BAD_REQUEST:
                return BadRequestError(message, **kwargs)
            if code == "RequestTimeout":
                return APITimeoutError(message, **kwargs)
            if code == "PreconditionFailed" or status == 412:
                out = APIStatusError(f"{message}: the object changed while it was read", **kwargs)
                out.retry_limit = 1  # read it again, once
                return out
            return status_error_class(status or 500)(message, **kwargs)
        if isinstance(exc, (*boto.connect_timeouts, TimeoutError)):
            return APITimeoutError(f"s3: timed out: {self._redact(str(exc))} ({where})",
                                   backend=self.name)
        if isinstance(exc, (*boto.connection_errors, ConnectionError)):
            return APIConnectionError(f"s3: no answer: {self._redact(str(exc))} ({where})",
                                      backend=self.name)
        return None

    # -- the endpoint layer -----------------------------------------------------------------
    def _order(self) -> builtins.list[_Endpoint]:
        eps = self._endpoints
        if len(eps) == 1:
            return eps
        start = next(self._rr) % len(eps)
        order = eps[start:] + eps[:start]
        if self.strategy == "least_loaded":
            order.sort(key=lambda e: e.in_flight)  # stable: ties keep the rotation
        return order

    def _on(self, ep: _Endpoint, fn: Callable[[_Endpoint], Any], what: str) -> Any:
        """``fn(ep)`` with the endpoint's counters and breaker; errors leave mapped."""
        ep.begin()
        try:
            value = fn(ep)
        except AcceleratorError as exc:
            ep.end(exc)
            raise
        except Exception as exc:
            mapped = self._map(exc, ep, what)
            if mapped is None:  # not the endpoint's doing (a local disk, a bug)
                ep.end(None)
                raise
            ep.end(mapped)
            raise mapped from exc
        except BaseException:
            ep.end(None)
            raise
        ep.end(None)
        return value

    def _all_open(self) -> CircuitOpenError:
        wait = min(e.breaker.retry_after() for e in self._endpoints)
        return CircuitOpenError(f"s3: every endpoint's circuit is open, retry in {wait:.1f}s",
                                retry_after=wait, backend=self.name)

    def _any(self, fn: Callable[[_Endpoint], Any], what: str, *, read: bool = False) -> Any:
        """``fn`` on one endpoint, failing over to the next healthy one; a replicated read
        also moves on when an endpoint lacks the object or holds a corrupt copy."""
        failures: builtins.list[AcceleratorError] = []
        for ep in self._order():
            if not ep.breaker.allow():
                continue
            try:
                return self._on(ep, fn, what)
            except AcceleratorError as exc:
                definitive = isinstance(exc, (NotFoundError, IntegrityError))
                if not (_fails_over(exc) or (read and self.replicate and definitive)):
                    raise
                log.debug("s3 %s: %s failed (%s), trying the next endpoint", what, ep.url,
                          type(exc).__name__)
                failures.append(exc)
        if not failures:
            raise self._all_open()
        # An endpoint that answered (it lacks the object, or has a bad copy) beats one that
        # did not: the replicas are meant to be the same.
        for kind in (IntegrityError, NotFoundError):
            for failure in failures:
                if isinstance(failure, kind):
                    raise failure
        raise failures[-1]

    def _every(self, fn: Callable[[_Endpoint], Any], what: str) -> Any:
        """``fn`` on every endpoint (a replicated write): done when one took it; an error
        that is the request's own (denied, bad request) is raised."""
        results, failures, skipped = [], [], []
        for ep in self._order():
            if not ep.breaker.allow():
                skipped.append(ep)
                continue
            try:
                results.append(self._on(ep, fn, what))
            except AcceleratorError as exc:
                if not _fails_over(exc):
                    raise
                failures.append(exc)
                skipped.append(ep)
        if not results:
            if not failures:
                raise self._all_open()
            raise failures[-1]
        for ep in skipped:
            log.debug("s3 %s: %s missed a replicated write", what, ep.url)
            ep.missed()
        return results[0]

    def _write(self, fn: Callable[[_Endpoint], Any], what: str) -> Any:
        return self._every(fn, what) if self.replicate else self._any(fn, what)

    def _read(self, fn: Callable[[_Endpoint], Any], what: str) -> Any:
        return self._any(fn, what, read=True)

    @staticmethod
    def _wait(watch: Any, future: Any, attempt: Attempt | None) -> Any:
        """A transfer's result, bounded by the attempt's deadline."""
        timeout = None
        if attempt is not None and attempt.deadline is not None:
            timeout = max(0.0, attempt.deadline - time.monotonic())
        try:
            if not watch.done.wait(timeout):
                raise APITimeoutError("s3: deadline passed during the transfer", backend="s3")
            return future.result()
        except BaseException:
            future.cancel()
            watch.done.wait(CANCEL_GRACE)  # its threads stop writing before the file closes
            raise

    # -- running requests ---------------------------------------------------------------------
    def _plan(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[Attempt], Any]:
        planner = getattr(self, f"_plan_{method}", None)
        if planner is None:
            raise UnsupportedOperation(f"s3 has no operation {method!r}")
        return planner(*args, **kwargs)  # type: ignore[no-any-return]

    def _run(self, method: str, *args: Any, priority: int = Priority.NORMAL, **kwargs: Any) -> Any:
        check_priority(priority)
        return self._engine.call(self._plan(method, args, kwargs), op_name=method,
                                 priority=priority)

    def submit(self, method: str, *args: Any, priority: int = Priority.NORMAL,
               **kwargs: Any) -> Future[Any]:
        """Start ``method`` without waiting; the future holds its result or error. A model
        method runs in a thread of its own (its requests go through the engine as usual)."""
        check_priority(priority)
        if method in _COMPOSITE:
            fut: Future[Any] = Future()
            target = getattr(self, method)

            def run() -> None:
                if not fut.set_running_or_notify_cancel():
                    return
                try:
                    fut.set_result(target(*args, priority=priority, **kwargs))
                except BaseException as exc:
                    fut.set_exception(exc)

            threading.Thread(target=run, name=f"ipfs-accel-s3-{method}", daemon=True).start()
            return fut
        return self._engine.submit(self._plan(method, args, kwargs), op_name=method,
                                   priority=priority)

    async def _arun(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self.submit(method, *args, **kwargs))

    def _gather(self, futures: builtins.list[Future[Any]]) -> builtins.list[Any]:
        """Every future's result; the first error is raised once all have finished (so no
        transfer is still writing when the caller sees it)."""
        first: BaseException | None = None
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except BaseException as exc:
                first = first or exc
                out.append(None)
        if first is not None:
            raise first
        return out

    # -- objects -----------------------------------------------------------------------------
    def upload_file(self, path: str | os.PathLike[str], key: str, *,
                    metadata: Mapping[str, str] | None = None,
                    priority: int = Priority.NORMAL) -> str:
        """Upload a local file; returns its SHA-256 (hex), also stored in the metadata."""
        return self._run("upload_file", path, key, metadata=metadata, priority=priority)  # type: ignore[no-any-return]

    def upload_bytes(self, data: bytes, key: str, *, metadata: Mapping[str, str] | None = None,
                     priority: int = Priority.NORMAL) -> str:
        """Upload ``data``; returns its SHA-256 (hex), also stored in the metadata."""
        return self._run("upload_bytes", data, key, metadata=metadata, priority=priority)  # type: ignore[no-any-return]

    def download_file(self, key: str, path: str | os.PathLike[str], *, verify: bool = True,
                      priority: int = Priority.NORMAL) -> None:
        """Download to ``path`` through a temporary file beside it, renamed once the
        SHA-256 matches (``verify=False``: objects this package did not upload)."""
        self._run("download_file", key, path, verify=verify, priority=priority)

    def download_bytes(self, key: str, *, verify: bool = True,
                       priority: int = Priority.NORMAL) -> bytes:
        return self._run("download_bytes", key, verify=verify, priority=priority)  # type: ignore[no-any-return]

    def head(self, key: str, *, priority: int = Priority.NORMAL) -> S3Object:
        """The object's size, ETag, time and metadata; :class:`NotFoundError` if absent."""
        return self._run("head", key, priority=priority)  # type: ignore[no-any-return]

    def exists(self, key: str, *, priority: int = Priority.NORMAL) -> bool:
        return self._run("exists", key, priority=priority)  # type: ignore[no-any-return]

    def delete(self, key: str, *, priority: int = Priority.NORMAL) -> None:
        """Delete the object (no error if it is absent, as in S3)."""
        self._run("delete", key, priority=priority)

    def copy(self, src_key: str, dst_key: str, *, priority: int = Priority.NORMAL) -> None:
        """Server-side copy, metadata (and so the checksum) included."""
        self._run("copy", src_key, dst_key, priority=priority)

    def presigned_url(self, key: str, *, method: str = "get", expires: int = 3600) -> str:
        """A URL that lets anyone ``GET`` (or ``PUT``) the object for ``expires`` seconds,
        signed for a healthy endpoint. An object PUT this way has no recorded checksum."""
        layout.check_key(key)
        if method not in ("get", "put"):
            raise ValueError(f"method must be 'get' or 'put', got {method!r}")
        if isinstance(expires, bool) or not isinstance(expires, int) \
                or not 1 <= expires <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires must be 1 to {MAX_PRESIGN_SECONDS} seconds, got {expires!r}")
        ep = next((e for e in self._order() if e.breaker.state.name != "OPEN"), None)
        if ep is None:
            raise self._all_open()
        return ep.client.generate_presigned_url(  # type: ignore[no-any-return]
            f"{method}_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires,
            HttpMethod=method.upper())

    def list(self, prefix: str = "", *, priority: int = Priority.NORMAL) -> Iterator[S3Object]:
        """Every object under ``prefix``, in key order, one engine request per page of up to
        1000 (fetched as the iterator is read). Replicated: the endpoints' listings merged."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {type(prefix).__name__}")
        check_priority(priority)
        if not self.replicate or len(self._endpoints) == 1:
            return self._pages(prefix, None, priority)
        merged = heapq.merge(*(self._pages(prefix, ep, priority, tolerant=True)
                               for ep in self._endpoints), key=lambda o: o.key)
        return self._unique(merged)

    @staticmethod
    def _unique(objects: Iterator[S3Object]) -> Iterator[S3Object]:
        last = None
        for o in objects:
            if o.key != last:
                yield o
                last = o.key

    def _pages(self, prefix: str, pinned: _Endpoint | None, priority: int,
               tolerant: bool = False) -> Iterator[S3Object]:
        """Pages by ``StartAfter`` (not continuation tokens), so a page may come from another
        endpoint than the one before. ``pinned``: this endpoint only; ``tolerant``: an
        endpoint that fails ends its part of a merged listing (the others hold replicas)."""
        after = ""
        while True:
            def fetch(ep: _Endpoint, after: str = after) -> dict[str, Any]:
                args = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
                if after:
                    args["StartAfter"] = after
                return ep.client.list_objects_v2(**args)  # type: ignore[no-any-return]

            def operation(attempt: Attempt) -> dict[str, Any]:
                if pinned is None:
                    return self._any(fetch, f"list {prefix!r}")  # type: ignore[no-any-return]
                if not pinned.breaker.allow():
                    raise CircuitOpenError(f"s3: circuit open for {pinned.url}",
                                           retry_after=pinned.breaker.retry_after(),
                                           backend=self.name)
                return self._on(pinned, fetch, f"list {prefix!r}")  # type: ignore[no-any-return]

            if tolerant and pinned is not None and pinned.breaker.state.name == "OPEN":
                log.debug("s3 list: %s left the merged listing (circuit open)", pinned.url)
                return
            try:
                page = self._engine.call(operation, op_name="list", priority=priority)
            except (APIError, CircuitOpenError) as exc:
                if not tolerant or isinstance(exc, (AuthenticationError, PermissionDeniedError,
                                                    NotFoundError)):
                    raise
                log.debug("s3 list: %s left the merged listing (%s)", pinned and pinned.url,
                          type(exc).__name__)
                return
            contents = page.get("Contents") or []
            for c in contents:
                yield S3Object(c["Key"], int(c.get("Size", 0)), _etag(c.get("ETag")),
                               c.get("LastModified"))
            if not page.get("IsTruncated") or not contents:
                return
            after = contents[-1]["Key"]

    # -- plans: each returns the engine operation -------------------------------------------
    def _put(self, ep: _Endpoint, key: str, body: bytes | None, path: str | None,
             size: int, meta: dict[str, str], attempt: Attempt) -> None:
        if size < self._transfer["multipart_threshold"]:
            if body is None:
                with open(path, "rb") as fh:  # type: ignore[arg-type]
                    body = fh.read()
            ep.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=meta)
            return
        watch = self._boto.Watch(size=size)
        source: Any = path if path is not None else io.BytesIO(body)  # type: ignore[arg-type]
        future = ep.manager.upload(source, self.bucket, key, extra_args={"Metadata": meta},
                                   subscribers=[watch])
        self._wait(watch, future, attempt)

    def _plan_upload_bytes(self, data: Any, key: str, *,
                           metadata: Mapping[str, str] | None = None) -> Callable[[Attempt], str]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        layout.check_key(key)
        body = bytes(data)
        sha = hashlib.sha256(body).hexdigest()
        meta = self._metadata(metadata, sha)

        def operation(attempt: Attempt) -> str:
            self._write(lambda ep: self._put(ep, key, body, None, len(body), meta, attempt),
                        f"upload {key}")
            return sha

        return operation

    def _plan_upload_file(self, path: Any, key: str, *,
                          metadata: Mapping[str, str] | None = None) -> Callable[[Attempt], str]:
        path = os.fspath(path)
        layout.check_key(key)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        self._metadata(metadata, "0" * 64)  # checked now, before anything is queued
        known: dict[str, Any] = {}

        def operation(attempt: Attempt) -> str:
            if not known:  # read once, even when the request is retried
                st = os.stat(path)
                body = None
                if st.st_size < self._transfer["multipart_threshold"]:
                    with open(path, "rb") as fh:  # small: one read gives body and checksum
                        body = fh.read()
                    sha = hashlib.sha256(body).hexdigest()
                else:
                    sha = layout.sha256_file(path)
                known.update(stat=(st.st_size, st.st_mtime_ns), body=body, sha=sha,
                             size=len(body) if body is not None else st.st_size)
            meta = self._metadata(metadata, known["sha"])
            self._write(lambda ep: self._put(ep, key, known["body"], path, known["size"], meta,
                                             attempt), f"upload {key}")
            st = os.stat(path)
            if known["body"] is None and (st.st_size, st.st_mtime_ns) != known["stat"]:
                raise IntegrityError(f"s3: {path} changed while it was uploaded to {key}; "
                                     "upload it again", key=key, backend=self.name)
            return known["sha"]  # type: ignore[no-any-return]

        return operation

    @staticmethod
    def _metadata(metadata: Mapping[str, str] | None, sha: str) -> dict[str, str]:
        out = {}
        for k, v in (metadata or {}).items():
            if not isinstance(k, str) or not k or k.lower() == SHA_META:
                raise ValueError(f"metadata key {k!r} is not allowed (the checksum is "
                                 f"'{SHA_META}', set by the upload)")
            out[k.lower()] = check_header_value(v, f"metadata[{k!r}]")
        out[SHA_META] = sha
        return out

    def _fetch(self, ep: _Endpoint, key: str, dest: str, size: int | None,
               expected: str | None, etag: str | None, attempt: Attempt) -> None:
        """Download ``key`` to a temporary file beside ``dest``, check its SHA-256 against
        ``expected`` (None: not checked) and rename it to ``dest``."""
        tmp = layout.temp_path(dest)
        try:
            with open(tmp, "wb") as fh:
                if size is not None and size < self._transfer["multipart_threshold"]:
                    args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
                    if etag:
                        args["IfMatch"] = f'"{etag}"'
                    body = ep.client.get_object(**args)["Body"]
                    h = hashlib.sha256()
                    try:
                        for chunk in body.iter_chunks(self._transfer["io_chunksize"]):
                            h.update(chunk)
                            fh.write(chunk)
                    finally:
                        body.close()
                    actual = h.hexdigest()
                else:
                    watch = self._boto.Watch(size=size, etag=f'"{etag}"' if etag else None)
                    future = ep.manager.download(self.bucket, key, fh, subscribers=[watch])
                    self._wait(watch, future, attempt)
                    fh.flush()
                    actual = None
            if expected is not None:
                if actual is None:
                    actual = layout.sha256_file(tmp)
                if actual != expected:
                    raise IntegrityError(
                        f"s3: {key} on {ep.url} does not match its recorded SHA-256 (expected "
                        f"{expected}, got {actual}); nothing was written to {dest}",
                        key=key, expected=expected, actual=actual, backend=self.name)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _plan_download_file(self, key: str, path: Any, *, verify: bool = True) -> Callable[[Attempt], None]:
        layout.check_key(key)
        dest = os.path.abspath(os.fspath(path))
        if os.path.isdir(dest):
            raise IsADirectoryError(f"{dest!r} is a directory")
        if not os.path.isdir(os.path.dirname(dest)):
            raise FileNotFoundError(f"no such directory: {os.path.dirname(dest)!r}")

        def operation(attempt: Attempt) -> None:
            def fetch(ep: _Endpoint) -> None:
                head = ep.client.head_object(Bucket=self.bucket, Key=key)
                expected = self._expected(key, head.get("Metadata"), ep, verify)
                self._fetch(ep, key, dest, int(head["ContentLength"]), expected,
                            _etag(head.get("ETag")), attempt)

            layout.remove_stale_temps(dest)
            self._read(fetch, f"download {key}")

        return operation

    def _expected(self, key: str, metadata: Mapping[str, str] | None, ep: _Endpoint,
                  verify: bool) -> str | None:
        if not verify:
            return None
        sha = (metadata or {}).get(SHA_META)
        if not sha:
            raise IntegrityError(f"s3: {key} on {ep.url} has no recorded SHA-256 (it was not "
                                 "uploaded by ipfs-accelerate-api); pass verify=False to fetch "
                                 "it unchecked", key=key, backend=self.name)
        return sha

    def _plan_download_bytes(self, key: str, *, verify: bool = True) -> Callable[[Attempt], bytes]:
        layout.check_key(key)

        def fetch(ep: _Endpoint) -> bytes:
            resp = ep.client.get_object(Bucket=self.bucket, Key=key)
            try:
                data: bytes = resp["Body"].read()
            finally:
                resp["Body"].close()
            expected = self._expected(key, resp.get("Metadata"), ep, verify)
            if expected is not None:
                actual = hashlib.sha256(data).hexdigest()
                if actual != expected:
                    raise IntegrityError(
                        f"s3: {key} on {ep.url} does not match its recorded SHA-256 "
                        f"(expected {expected}, got {actual})", key=key, expected=expected,
                        actual=actual, backend=self.name)
            return data

        return lambda attempt: self._read(fetch, f"download {key}")

    def _head(self, ep: _Endpoint, key: str) -> S3Object:
        h = ep.client.head_object(Bucket=self.bucket, Key=key)
        return S3Object(key, int(h.get("ContentLength", 0)), _etag(h.get("ETag")),
                        h.get("LastModified"), dict(h.get("Metadata") or {}))

    def _plan_head(self, key: str) -> Callable[[Attempt], S3Object]:
        layout.check_key(key)
        return lambda attempt: self._read(lambda ep: self._head(ep, key), f"head {key}")

    def _plan_exists(self, key: str) -> Callable[[Attempt], bool]:
        head = self._plan_head(key)

        def operation(attempt: Attempt) -> bool:
            try:
                head(attempt)
            except NotFoundError:
                return False
            return True

        return operation

    def _plan_delete(self, key: str) -> Callable[[Attempt], None]:
        layout.check_key(key)
        return lambda attempt: self._write(
            lambda ep: ep.client.delete_object(Bucket=self.bucket, Key=key), f"delete {key}")

    def _plan_delete_many(self, keys: builtins.list[str]) -> Callable[[Attempt], None]:
        """One DeleteObjects request (at most 1000 keys); a key it could not delete is raised."""

        def fn(ep: _Endpoint) -> None:
            resp = ep.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys], "Quiet": True})
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise self._boto.ClientError(
                    {"Error": {"Code": first.get("Code"), "Message": first.get("Message")},
                     "ResponseMetadata": resp.get("ResponseMetadata", {})}, "DeleteObjects")

        return lambda attempt: self._write(fn, f"delete {len(keys)} objects")

    def _plan_copy(self, src_key: str, dst_key: str) -> Callable[[Attempt], None]:
        layout.check_key(src_key, "src_key")
        layout.check_key(dst_key, "dst_key")

        def fn(ep: _Endpoint, attempt: Attempt) -> None:
            src = self._head(ep, src_key)
            source = {"Bucket": self.bucket, "Key": src_key}
            if src.size <= self._max_single_copy:
                ep.client.copy_object(Bucket=self.bucket, Key=dst_key, CopySource=source,
                                      MetadataDirective="COPY",
                                      CopySourceIfMatch=f'"{src.etag}"')
                return
            watch = self._boto.Watch(size=src.size)
            future = ep.manager.copy(source, self.bucket, dst_key, subscribers=[watch],
                                     extra_args={"Metadata": dict(src.metadata or {}),
                                                 "MetadataDirective": "REPLACE"})
            self._wait(watch, future, attempt)

        return lambda attempt: self._write(lambda ep: fn(ep, attempt),
                                           f"copy {src_key} -> {dst_key}")

    #: Objects above this are copied in parts (S3 copies at most 5 GiB in one request).
    _max_single_copy = MAX_SINGLE_COPY

    # -- models ------------------------------------------------------------------------------
    def put_model(self, local_dir: str | os.PathLike[str], name: str, version: str, *,
                  priority: int = Priority.NORMAL) -> dict[str, Any]:
        """Upload every file under ``local_dir`` (in parallel, up to ``max_concurrency``),
        then the manifest: the version exists only once all its files do. A version put
        again is first made absent (its manifest removed), then replaced; files the new
        version lacks are removed after. Returns the manifest."""
        check_priority(priority)
        prefix = layout.model_prefix(name, version)
        mkey = prefix + layout.MANIFEST
        files = layout.local_files(os.fspath(local_dir))
        if not files:
            raise ValueError(f"no files under {os.fspath(local_dir)!r}")
        keys = {rel: layout.file_key(prefix, rel) for rel, _ in files}
        replacing = self.exists(mkey, priority=priority)
        if replacing:
            self.delete(mkey, priority=priority)
        sizes = {rel: os.path.getsize(full) for rel, full in files}
        futures = [self.submit("upload_file", full, keys[rel], priority=priority)
                   for rel, full in files]
        shas = self._gather(futures)
        entries = [layout.ManifestFile(rel, sizes[rel], sha)
                   for (rel, _), sha in zip(files, shas)]
        doc = layout.manifest_bytes(name, version, entries)
        self.upload_bytes(doc, mkey, priority=priority)
        if replacing:
            keep = set(keys.values()) | {mkey}
            stale = [o.key for o in self.list(prefix, priority=priority) if o.key not in keep]
            self._delete_keys(stale, priority)
        return json.loads(doc)  # type: ignore[no-any-return]

    def get_model(self, name: str, version: str, dest_dir: str | os.PathLike[str], *,
                  priority: int = Priority.NORMAL) -> dict[str, Any]:
        """Download a model version into ``dest_dir`` against its manifest: every file is
        checked, files already there and matching are skipped (an interrupted fetch resumes),
        and a manifest naming a path outside ``dest_dir`` is refused before anything is
        written. Returns the manifest."""
        check_priority(priority)
        mkey = layout.manifest_key(name, version)
        doc, files = layout.parse_manifest(self.download_bytes(mkey, priority=priority), mkey)
        prefix = layout.model_prefix(name, version)
        root = os.path.realpath(os.fspath(dest_dir))
        targets = [layout.safe_target(root, f.path, mkey) for f in files]  # all, before writing
        os.makedirs(root, exist_ok=True)
        futures = []
        for f, target in zip(files, targets):
            if os.path.isfile(target) and os.path.getsize(target) == f.size \
                    and layout.sha256_file(target) == f.sha256:
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            futures.append(self._engine.submit(
                self._plan_fetch_file(layout.file_key(prefix, f.path), target, f),
                op_name="get_model_file", priority=priority))
        self._gather(futures)
        return doc

    def _plan_fetch_file(self, key: str, target: str, f: layout.ManifestFile) -> Callable[[Attempt], None]:
        def operation(attempt: Attempt) -> None:
            layout.remove_stale_temps(target)
            self._read(lambda ep: self._fetch(ep, key, target, f.size, f.sha256, None, attempt),
                       f"download {key}")

        return operation

    def list_models(self, *, priority: int = Priority.NORMAL) -> builtins.list[tuple[str, str]]:
        """Every ``(name, version)`` that has a manifest, sorted."""
        found = (layout.model_of_key(o.key) for o in self.list("", priority=priority))
        return sorted({m for m in found if m is not None})

    def delete_model(self, name: str, version: str, *, priority: int = Priority.NORMAL) -> None:
        """Remove the manifest first (the version is gone at once), then its files."""
        check_priority(priority)
        prefix = layout.model_prefix(name, version)
        self.delete(prefix + layout.MANIFEST, priority=priority)
        self._delete_keys([o.key for o in self.list(prefix, priority=priority)], priority)

    def _delete_keys(self, keys: builtins.list[str], priority: int) -> None:
        futures = [self._engine.submit(self._plan_delete_many(keys[i:i + DELETE_BATCH]),
                                       op_name="delete_many", priority=priority)
                   for i in range(0, len(keys), DELETE_BATCH)]
        self._gather(futures)

    # -- async forms -------------------------------------------------------------------------
    async def aupload_file(self, path: str | os.PathLike[str], key: str, **kw: Any) -> str:
        return await self._arun("upload_file", path, key, **kw)  # type: ignore[no-any-return]

    async def aupload_bytes(self, data: bytes, key: str, **kw: Any) -> str:
        return await self._arun("upload_bytes", data, key, **kw)  # type: ignore[no-any-return]

    async def adownload_file(self, key: str, path: str | os.PathLike[str], **kw: Any) -> None:
        await self._arun("download_file", key, path, **kw)

    async def adownload_bytes(self, key: str, **kw: Any) -> bytes:
        return await self._arun("download_bytes", key, **kw)  # type: ignore[no-any-return]

    async def ahead(self, key: str, **kw: Any) -> S3Object:
        return await self._arun("head", key, **kw)  # type: ignore[no-any-return]

    async def aexists(self, key: str, **kw: Any) -> bool:
        return await self._arun("exists", key, **kw)  # type: ignore[no-any-return]

    async def adelete(self, key: str, **kw: Any) -> None:
        await self._arun("delete", key, **kw)

    async def acopy(self, src_key: str, dst_key: str, **kw: Any) -> None:
        await self._arun("copy", src_key, dst_key, **kw)

    async def aput_model(self, local_dir: str | os.PathLike[str], name: str, version: str,
                         **kw: Any) -> dict[str, Any]:
        return await self._arun("put_model", local_dir, name, version, **kw)  # type: ignore[no-any-return]

    async def aget_model(self, name: str, version: str, dest_dir: str | os.PathLike[str],
                         **kw: Any) -> dict[str, Any]:
        return await self._arun("get_model", name, version, dest_dir, **kw)  # type: ignore[no-any-return]

    async def alist_models(self, **kw: Any) -> builtins.list[tuple[str, str]]:
        return await self._arun("list_models", **kw)  # type: ignore[no-any-return]

    async def adelete_model(self, name: str, version: str, **kw: Any) -> None:
        await self._arun("delete_model", name, version, **kw)

    async def alist(self, prefix: str = "", **kw: Any) -> AsyncIterator[S3Object]:
        """``async for obj in s3.alist(prefix)``: each page is read in a worker thread."""
        it = self.list(prefix, **kw)
        while True:
            obj = await asyncio.to_thread(next, it, None)
            if obj is None:
                return
            yield obj

    # -- lifecycle ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The engine's snapshot plus ``endpoints``: each one's URL, HTTP requests (by S3
        operation), calls, errors, requests in flight, missed replicated writes, breaker."""
        snap = self._engine.stats()
        snap.update(bucket=self.bucket, strategy=self.strategy, replicate=self.replicate,
                    endpoints=[e.stats() for e in self._endpoints])
        return snap

    def close(self) -> None:
        """Stop intake, fail what is queued with ``ClientClosed``, then let the transfer
        managers and clients go."""
        self._engine.close()
        for e in self._endpoints:
            try:
                e.manager.shutdown(cancel=True)
            finally:
                close = getattr(e.client, "close", None)
                if close is not None:
                    close()

    def __enter__(self) -> "S3Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._engine
