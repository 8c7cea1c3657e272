"""Hugging Face Text Generation Inference (TGI), PROTOCOLS.md §6.

- ``complete`` / ``stream_complete``: the native ``/generate`` and ``/generate_stream``
  (``max_tokens`` is sent as ``max_new_tokens``; ``stop``, ``temperature``, ``top_p``,
  ``top_k``, ``seed``... go in ``parameters``). ``details`` is asked for unless the caller says
  otherwise, since TGI leaves it out by default and the usage and finish reason live there.
  The stream's events are ``data:{json}`` (no space), one token each; the last one carries
  ``generated_text`` (and ``details``) and there is no ``[DONE]``: the stream is complete
  once it has come. Special tokens (the end-of-sequence one) add no text.
- ``chat`` / ``stream_chat``: the OpenAI-compatible Messages API under ``/v1``, parsed by the
  OpenAI adapter; ``model`` is optional (``"tgi"``; other names select a LoRA adapter).
- ``info()``, ``health()`` (a probe: not queued, not retried), ``tokenize(text)``,
  ``list_models()``.
- Errors are ``{"error": ..., "error_type": ...}``: 422 ``validation`` is not retried, 424
  ``generation`` is retried once, 429 ``overloaded`` (more requests than
  ``max_concurrent_requests``) is retried after a backoff, 5xx as usual. An error event at the
  start of a stream (TGI sends validation and overload errors in-band, on a 200) is raised as
  the status its ``error_type`` stands for, so it is retried the same way; one after text has
  arrived raises :class:`~ipfs_accelerate_api.errors.StreamInterrupted` with the text so far.
- No key by default (``requires_key = False``); with ``--api-key`` the server wants
  ``Authorization: Bearer`` (``HF_TGI_API_KEY`` or ``HF_API_KEY``). The base URL comes from
  ``base_url=``, else ``HF_TGI_API_URL`` / ``TGI_API_URL``, else ``http://127.0.0.1:8080``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from .._enums import Priority
from ..engine import OpResult
from ..errors import (
    ResponseFormatError,
    StreamInterrupted,
    status_error_class,
)
from ..transport import Response, SSEEvent
from ..types import ChatChunk, CompletionResponse, Usage
from ._shape import as_count, as_dict, as_list, as_str, field
from .base import Backend, Plan, StreamParser, unified_finish_reason
from .openai import DEFAULT_MAX_TOKENS_ESTIMATE, OpenAIBackend

__all__ = ["ERROR_STATUS", "FINISH_REASONS", "TGIBackend"]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
BASE_URL_ENV = ("HF_TGI_API_URL", "TGI_API_URL")
#: The Messages API's conventional model name (TGI serves one model).
DEFAULT_MODEL = "tgi"
#: TGI's finish reasons -> the unified ones.
FINISH_REASONS = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}
#: The status each ``error_type`` is answered with (for the ones sent inside a stream).
ERROR_STATUS = {"validation": 422, "generation": 424, "overloaded": 429,
                "incomplete_generation": 500}
#: How many 424 (a generation failure on the server) one request retries.
GENERATION_RETRIES = 1


def _header_count(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


class TGIBackend(OpenAIBackend):
    name = "tgi"
    env_prefix = ("HF_TGI", "HF")
    #: "`inputs` tokens + `max_new_tokens` must be <= 2048", and the Messages API's wording
    context_window_phrases = ("`max_new_tokens` must be <=", "maximum context length")
    default_base_url = DEFAULT_BASE_URL
    requires_key = False
    api_prefix = "/v1"
    finish_reasons = FINISH_REASONS
    retry_limits = {424: GENERATION_RETRIES}

    # What the OpenAI adapter has and TGI does not.
    _plan_generate_image = None  # type: ignore[assignment]
    _plan_transcribe = None  # type: ignore[assignment]
    _plan_speech = None  # type: ignore[assignment]
    _plan_embed = Backend._plan_embed

    def __init__(self, *, base_url: str | None = None, **options: Any) -> None:
        env = next((os.environ[v] for v in BASE_URL_ENV if os.environ.get(v)), None)
        super().__init__(base_url=base_url or env, **options)

    # -- conventions ----------------------------------------------------------------------
    def _error_message(self, body: Any) -> tuple[str, str | None]:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            kind = body.get("error_type")
            return body["error"], kind if isinstance(kind, str) else None
        return super()._error_message(body)

    def _plan(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        if "model" in kwargs and kwargs["model"] is None:
            kwargs["model"] = DEFAULT_MODEL
        return super()._plan(method, args, kwargs)

    def _in_band_error(self, obj: dict[str, Any], started: bool) -> Exception:
        """An ``{"error", "error_type"}`` event: before any text, the status error it stands
        for (retried as that status would be); after some, the stream was interrupted."""
        message = str(obj["error"])[:500]
        kind = obj.get("error_type")
        kind = kind if isinstance(kind, str) else None
        if started:
            return StreamInterrupted(f"{self.name}: error in stream ({kind}): {message}",
                                     backend=self.name, body=obj)
        status = ERROR_STATUS.get(kind or "", 500)
        err = status_error_class(status)(message, status=status, code=kind, body=obj,
                                         backend=self.name, headers={})
        err.retry_limit = self.retry_limits.get(status)
        return err

    # -- generate ---------------------------------------------------------------------------
    def _generate_body(self, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if "max_tokens" in params:
            if "max_new_tokens" in params:
                raise ValueError("pass max_tokens or max_new_tokens, not both")
            params["max_new_tokens"] = params.pop("max_tokens")
        if isinstance(params.get("stop"), str):
            params["stop"] = [params["stop"]]
        params.setdefault("details", True)
        return {"inputs": prompt, "parameters": params}

    def _generate_estimate(self, body: dict[str, Any], encoded: bytes) -> int:
        out = body["parameters"].get("max_new_tokens")
        if isinstance(out, bool) or not isinstance(out, int) or out <= 0:
            out = DEFAULT_MAX_TOKENS_ESTIMATE  # not ours to refuse: the service answers 422
        return len(encoded) // 4 + 1 + out

    def _plan_complete(self, prompt: str, *, model: str, **params: Any) -> Plan:
        """``model`` is not sent: the server has one (``adapter_id=`` picks a LoRA adapter)."""
        body = self._generate_body(prompt, params)

        def parse(resp: Response) -> OpResult:
            data = as_dict(resp.json(), "response")
            text = as_str(field(data, "generated_text", "response"), "generated_text")
            finish, completion = None, _header_count(resp.headers, "x-generated-tokens")
            if data.get("details") is not None:
                details = as_dict(data["details"], "details")
                finish = unified_finish_reason(details.get("finish_reason"), FINISH_REASONS,
                                               "details.finish_reason")
                completion = as_count(details.get("generated_tokens"), "details.generated_tokens")
            prompt_tokens = _header_count(resp.headers, "x-prompt-tokens") or 0
            usage = Usage(prompt_tokens, completion or 0, prompt_tokens + (completion or 0))
            return OpResult(CompletionResponse(text, finish, usage, None,
                                               resp.headers.get(self.request_id_header), data),
                            usage.prompt_tokens, usage.completion_tokens, resp.headers)

        encoded = json.dumps(body).encode()
        return Plan(self._http("POST", "/generate", parse, body=encoded),
                    self._generate_estimate(body, encoded))

    def stream_complete(self, prompt: str, *, model: str | None = None,
                        priority: int = Priority.NORMAL, **params: Any) -> Iterator[ChatChunk]:
        """A completion as an iterator of :class:`~ipfs_accelerate_api.types.ChatChunk`, one
        token each; the last has the finish reason and the usage."""
        return self._run("stream_complete", prompt, model=model, priority=priority, **params)

    def _plan_stream_complete(self, prompt: str, *, model: str, **params: Any) -> Plan:
        body = self._generate_body(prompt, params)
        encoded = json.dumps(body).encode()
        return self._stream_plan("/generate_stream", encoded,
                                 self._generate_estimate(body, encoded),
                                 lambda: _GenerateStream(self))

    # -- the server ---------------------------------------------------------------------------
    def info(self, *, priority: int = Priority.NORMAL) -> dict[str, Any]:
        """``/info``: the model, its limits (``max_input_tokens``, ``max_total_tokens``,
        ``max_concurrent_requests``...) and the server's version."""
        return self._run("info", priority=priority)

    def _plan_info(self) -> Plan:
        return Plan(self._http("GET", "/info", lambda resp: OpResult(
            as_dict(resp.json(), "info"), headers=resp.headers)))

    def tokenize(self, text: str, *, priority: int = Priority.NORMAL) -> list[dict[str, Any]]:
        """``text`` as the model's tokens: ``{"id", "text", "start", "stop"}`` each."""
        return self._run("tokenize", text, priority=priority)

    def _plan_tokenize(self, text: str) -> Plan:
        if not isinstance(text, str):
            raise TypeError(f"tokenize takes a string, got {type(text).__name__}")

        def parse(resp: Response) -> OpResult:
            out = []
            for i, t in enumerate(as_list(resp.json(), "tokens")):
                t = as_dict(t, f"tokens[{i}]")
                out.append({"id": as_count(field(t, "id", f"tokens[{i}]"), f"tokens[{i}].id"),
                            "text": as_str(field(t, "text", f"tokens[{i}]"), f"tokens[{i}].text"),
                            "start": as_count(t.get("start"), f"tokens[{i}].start"),
                            "stop": as_count(t.get("stop"), f"tokens[{i}].stop")})
            return OpResult(out, headers=resp.headers)

        return Plan(self._http("POST", "/tokenize", parse, json_body={"inputs": text}),
                    len(text) // 4 + 1)

    def health(self) -> bool:
        """Whether the server is ready (``/health`` answers 200). A probe: it bypasses the
        queue, the limits and the retries, and any failure (503, no connection) is False."""
        return self._probe("/health")


class _GenerateStream(StreamParser):
    """``/generate_stream`` events: a token each; the last also has ``generated_text``."""

    def __init__(self, backend: TGIBackend) -> None:
        self._backend = backend
        self._started = False

    def feed(self, event: SSEEvent) -> Any:
        obj = as_dict(event.json(), "stream event")
        if obj.get("error") is not None:
            raise self._backend._in_band_error(obj, self._started)
        token = as_dict(field(obj, "token", "stream event"), "token")
        text = as_str(field(token, "text", "token"), "token.text")
        special = token.get("special", False)
        if not isinstance(special, bool):
            raise ResponseFormatError(f"token.special should be a boolean, got {special!r:.80}")
        self._started = True
        text = "" if special else text
        if as_str(obj.get("generated_text"), "generated_text", optional=True) is None:
            return ChatChunk(text=text, raw=obj)
        self.complete = True  # the final event: no terminator follows
        finish, usage = None, None
        if obj.get("details") is not None:
            details = as_dict(obj["details"], "details")
            finish = unified_finish_reason(details.get("finish_reason"), FINISH_REASONS,
                                           "details.finish_reason")
            prompt = as_count(details.get("input_length"), "details.input_length")
            completion = as_count(details.get("generated_tokens"), "details.generated_tokens")
            usage = Usage(prompt, completion, prompt + completion)
        return ChatChunk(text=text, finish_reason=finish, usage=usage, raw=obj)
