"""The one exception hierarchy of ipfs-accelerate-api.

Everything this package raises on purpose derives from :class:`AcceleratorError`::

    AcceleratorError
    ├── ConfigurationError            bad options, a missing key, an unsafe credentials file
    ├── UnsupportedOperation          the service has no such operation
    ├── QueueFull        (+ queue.Full)    a bounded queue refused an item
    ├── QueueEmpty       (+ queue.Empty)   nothing arrived before the timeout
    ├── QueueClosed                   the queue was closed
    │   └── ClientClosed              the backend was closed while the request waited
    ├── CircuitOpenError              the breaker is open; ``retry_after`` says for how long
    ├── InputError       (+ ValueError)    a pipeline's input record is unusable (``line``)
    ├── ResumeConflict                an unfinished run beside the output used other input or options
    ├── NoDeploymentAvailable         a Router group has no deployment to send to (``retry_after``)
    └── APIError                      anything that came back from (or failed to reach) a service
        ├── APIConnectionError        the request did not get an answer
        │   └── APITimeoutError
        ├── ContentFilteredError      the service withheld the answer (``reason``)
        ├── IntegrityError            stored bytes differ from their recorded SHA-256 (``key``)
        ├── ResponseFormatError       the answer could not be understood
        │   └── StreamInterrupted     a stream broke after it started (``partial_text``)
        │       └── StreamTimeoutError  (+ APITimeoutError) a stream bound fired
        └── APIStatusError            an HTTP error status (``status``)
            ├── BadRequestError 400 · AuthenticationError 401 · PermissionDeniedError 403
            │   └── ContextWindowExceededError  the prompt is longer than the model takes
            ├── NotFoundError 404 · ConflictError 409 · UnprocessableEntityError 422
            ├── RateLimitError 429
            └── ServerError 5xx

:class:`QueueFull` and :class:`QueueEmpty` also subclass the standard library's
``queue.Full`` and ``queue.Empty``, so code written for :mod:`queue` keeps working.
"""

from __future__ import annotations

import queue as _queue
from typing import Any

__all__ = [
    "AcceleratorError",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CircuitOpenError",
    "ClientClosed",
    "ConfigurationError",
    "ConflictError",
    "ContentFilteredError",
    "ContextWindowExceededError",
    "InputError",
    "IntegrityError",
    "NoDeploymentAvailable",
    "NotFoundError",
    "PermissionDeniedError",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
    "RateLimitError",
    "ResponseFormatError",
    "ResumeConflict",
    "ServerError",
    "StreamInterrupted",
    "StreamTimeoutError",
    "UnprocessableEntityError",
    "UnsupportedOperation",
    "status_error_class",
]


class AcceleratorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(AcceleratorError, ValueError):
    """An option, a credential or a file is wrong; the message says what to change."""


class InputError(AcceleratorError, ValueError):
    """A pipeline's input cannot be used as it is: a record that is not valid UTF-8, a JSON
    line without the field... ``line`` is its 1-based line number in the source."""

    def __init__(self, message: str, *, line: int | None = None, source: str | None = None):
        super().__init__(message)
        self.line = line
        self.source = source


class NoDeploymentAvailable(AcceleratorError):
    """Every deployment of a Router group (and of its fallbacks) is unavailable: breaker
    open, keys cooling or disabled, no room in its limits. ``retry_after``: seconds until
    the first one is expected back (``inf``: none will be)."""

    def __init__(self, message: str, *, retry_after: float = 0.0, group: str | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.group = group


class ResumeConflict(AcceleratorError):
    """The unfinished run beside the output was started with another input, model or
    option: resuming it would mix two runs (start over with ``restart=True``)."""


class UnsupportedOperation(AcceleratorError, NotImplementedError):
    """The backend's service has no such operation."""


class QueueFull(AcceleratorError, _queue.Full):
    """A bounded queue is full (policy ``reject``, a non-blocking put, or a timed-out wait)."""


class QueueEmpty(AcceleratorError, _queue.Empty):
    """Nothing could be taken from the queue before the timeout."""


class QueueClosed(AcceleratorError):
    """The queue is closed: no more puts, and gets fail once it is drained."""


class ClientClosed(QueueClosed):
    """The backend was closed before this request could be served."""


class CircuitOpenError(AcceleratorError):
    """The circuit breaker is open; calls fail fast for ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = 0.0, backend: str | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.backend = backend


class APIError(AcceleratorError):
    """Something went wrong talking to a service."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        backend: str | None = None,
        body: Any = None,
        code: str | None = None,
        headers: Any = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.backend = backend
        self.body = body
        self.code = code
        self.headers = dict(headers) if headers else {}
        #: A wait the service asked for in its body (Gemini's ``RetryInfo``), in seconds;
        #: headers (Retry-After and the like) are read by the engine itself.
        self.retry_after: float | None = None
        #: Retry a request that met this failure, at most this many times in all (TGI's 424
        #: is retried once, though 424 is not a retryable status); None: the retry policy
        #: and the status decide.
        self.retry_limit: int | None = None

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.insert(0, f"[{self.status}]")
        if self.backend and not self.message.startswith(f"{self.backend}:"):
            parts.insert(0, f"{self.backend}:")
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


class APIConnectionError(APIError):
    """The request never got an answer (refused, reset, DNS, TLS...)."""


class APITimeoutError(APIConnectionError):
    """A connect, read or total timeout expired."""


class ContentFilteredError(APIError):
    """The service blocked the prompt or withheld the answer (safety filters, recitation);
    ``reason`` holds the service's own word for why (``SAFETY``, ``PROHIBITED_CONTENT``...).
    Not retried: the same request gets the same verdict."""

    def __init__(self, message: str, *, reason: str | None = None, partial_text: str = "",
                 **kwargs: Any):
        super().__init__(message, **kwargs)
        self.reason = reason
        #: In a stream: the text that arrived before the verdict.
        self.partial_text = partial_text


class IntegrityError(APIError):
    """What came back is not what was stored: its SHA-256 differs from the one recorded at
    upload (``expected``, ``actual``), none was recorded, or a model manifest is unsafe.
    Not retried: the same object gives the same bytes."""

    def __init__(self, message: str, *, key: str | None = None, expected: str | None = None,
                 actual: str | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.key = key
        self.expected = expected
        self.actual = actual


class ResponseFormatError(APIError):
    """The service answered something that is not the format it promised."""


class StreamInterrupted(ResponseFormatError):
    """A stream broke after it had started; ``partial_text`` holds what arrived."""

    def __init__(self, message: str, *, partial_text: str = "", **kwargs: Any):
        super().__init__(message, **kwargs)
        self.partial_text = partial_text


class StreamTimeoutError(StreamInterrupted, APITimeoutError):
    """A stream went quiet for longer than ``Timeouts.stream_idle``, or ran past
    ``Timeouts.stream_total``; ``partial_text`` holds what arrived. Also an
    :class:`APITimeoutError`, so ``except APITimeoutError`` catches every timeout."""


class APIStatusError(APIError):
    """The service answered with an HTTP error status."""


class BadRequestError(APIStatusError):
    """400."""


class ContextWindowExceededError(BadRequestError):
    """The prompt (with the room asked for the reply) is longer than the model's context
    window; each backend maps its service's own answer to this (OpenAI's
    ``context_length_exceeded``, Anthropic's "prompt is too long", Gemini's token-count
    ``INVALID_ARGUMENT``, TGI's input-length 422)."""



class AuthenticationError(APIStatusError):
    """401."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404."""


class ConflictError(APIStatusError):
    """409."""


class UnprocessableEntityError(APIStatusError):
    """422."""

class _UnprocessableContextWindow(ContextWindowExceededError, UnprocessableEntityError):
    """A context-window refusal answered with 422 (TGI's): both classes catch it."""


class RateLimitError(APIStatusError):
    """429."""


class ServerError(APIStatusError):
    """5xx."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status (the one factory for all backends)."""
    if status >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status, APIStatusError)
