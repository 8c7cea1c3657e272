"""Groq, emulated (see shared PROTOCOLS.md section 3): the OpenAI service with Groq's
differences.

Routes below ``/groq``: ``/openai/v1/chat/completions`` (plain and SSE),
``/openai/v1/models[/{id}]`` (ids may hold a ``/``), ``/openai/v1/audio/transcriptions``.
The groq SDK's base URL is the prefix itself (``{root}/groq``); an OpenAI-style client's is
``{root}/groq/openai/v1``.

- Refused with a 400 in Groq's wording: ``logprobs``, ``top_logprobs``, ``logit_bias``,
  ``messages[].name``, ``n`` other than 1, transcript formats ``srt`` and ``vtt``, and every
  OpenAI-only field. (The wording is modelled on Groq's answers; unverified.)
- Answers carry ``x_groq`` (``id`` = the ``x-request-id``) and usage timings; a stream has
  ``x_groq.id`` on its first and last chunk and the usage in the last chunk's
  ``x_groq.usage``, whether or not ``stream_options.include_usage`` was asked.
- Rate-limit headers as Groq sends them: ``x-ratelimit-*-requests`` is the per-*day* request
  budget (``requests_per_day`` per key, refilling continuously over ``day`` seconds; tests
  may shorten the day), ``x-ratelimit-*-tokens`` the per-minute token budget
  (``ServiceConfig.tpm``); resets as durations (``2m59.56s``, ``7.66s``). A per-minute
  request limit (``ServiceConfig.rpm``) is enforced but, as at Groq, not reported. A 429
  has ``retry-after`` in whole seconds only.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterable, Iterator
from urllib.parse import unquote

from ._rules import Array, Body, Bool, Int, Obj, Str, Tagged, Violation
from ._server import Reply, Request, Route, Stream, sse_event
from .openai import CHAT, FREE, MESSAGE, TRANSCRIPTIONS, OpenAIService

__all__ = ["GroqService"]

CHAT_MODELS = ("llama-3.1-8b-instant", "llama-3.3-70b-versatile",
               "meta-llama/llama-4-scout-17b-16e-instruct",
               "meta-llama/llama-4-maverick-17b-128e-instruct", "meta-llama/llama-guard-4-12b",
               "moonshotai/kimi-k2-instruct", "openai/gpt-oss-120b", "openai/gpt-oss-20b",
               "qwen/qwen3-32b", "groq/compound", "groq/compound-mini")
TRANSCRIBE_MODELS = ("whisper-large-v3", "whisper-large-v3-turbo")
MODELS = [*CHAT_MODELS, *TRANSCRIBE_MODELS]
REQUESTS_PER_DAY = 14_400
DAY = 86_400.0
_DAY_BUCKET = "requests per day"

# -- request rules: OpenAI's, less what Groq refuses, plus Groq's own fields ------------------

#: OpenAI fields Groq answers with a 400 (an unknown field), or does not have.
_NOT_AT_GROQ = ("logprobs", "top_logprobs", "logit_bias", "audio", "modalities", "prediction",
                "web_search_options", "verbosity", "prompt_cache_key", "prompt_cache_retention",
                "prompt_cache_options", "safety_identifier", "moderation")
#: Messages without ``name`` (Groq refuses it), except function results, which need it.
GROQ_MESSAGE = Tagged("role", {
    role: Obj({k: r for k, r in v.fields.items() if k != "role" and (k != "name" or r.required)},
              extra=v.extra)
    for role, v in MESSAGE.variants.items()})
GROQ_CHAT = Body({
    **{k: r for k, r in CHAT.fields.items() if k not in _NOT_AT_GROQ},
    "messages": Array(GROQ_MESSAGE, required=True, min_items=1),
    "n": Int(min=1, max=1),
    "reasoning_effort": Str(enum=("none", "default", "low", "medium", "high")),
    "reasoning_format": Str(enum=("hidden", "raw", "parsed")), "include_reasoning": Bool(),
    "service_tier": Str(enum=("auto", "on_demand", "flex", "performance")),
    "search_settings": FREE, "documents": Array(FREE), "compound_custom": FREE,
    "citation_options": Str(enum=("enabled", "disabled")), "disable_tool_validation": Bool(),
    "exclude_domains": Array(Str()), "include_domains": Array(Str()),
})
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json")
MODEL_TRANSCRIPT_FORMATS = {m: TRANSCRIPT_FORMATS for m in TRANSCRIBE_MODELS}
GROQ_TRANSCRIPTIONS = Body({
    **{k: TRANSCRIPTIONS.fields[k] for k in ("file", "model", "temperature", "language",
                                              "prompt", "timestamp_granularities")},
    "response_format": Str(enum=TRANSCRIPT_FORMATS),
}, form=True)


def groq_duration(seconds: float) -> str:
    """Seconds as Groq writes a reset: ``2m59.56s``, ``7.66s``, ``4h48m0s``, ``430ms``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    out += f"{int(minutes)}m" if hours or minutes else ""
    return out + f"{secs:.2f}".rstrip("0").rstrip(".") + "s"


def _timed(usage: dict[str, Any]) -> dict[str, Any]:
    """Usage with Groq's timing fields (seconds)."""
    return {**usage, "queue_time": 0.001, "prompt_time": 0.001, "completion_time": 0.002,
            "total_time": 0.003}


class GroqService(OpenAIService):
    name = "groq"
    models = MODELS
    transcript_formats = MODEL_TRANSCRIPT_FORMATS
    requests_per_day = REQUESTS_PER_DAY
    day = DAY
    routes = (
        Route("POST", r"/openai/v1/chat/completions", "chat", GROQ_CHAT),
        Route("GET", r"/openai/v1/models", "list_models"),
        Route("GET", r"/openai/v1/models/(?P<model>.+)", "model"),
        Route("POST", r"/openai/v1/audio/transcriptions", "transcriptions", GROQ_TRANSCRIPTIONS),
    )

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex[:26]}"}

    def reject(self, violation: Violation) -> Reply:
        p = violation.param or "body"
        if violation.kind == "unknown":
            message = f"property '{p}' is unsupported"
        elif violation.kind == "above_max" and violation.param == "n":
            message = f"'n' : number must be at most {violation.expected}"
        else:
            return super().reject(violation)
        return self.error(400, message, "invalid_request_error", None, violation.param)

    # -- limits: a day's requests, a minute's tokens ------------------------------------------
    def ratelimit_headers(self, rpm: Any, tpm: Any) -> dict[str, str]:
        if not tpm:  # the per-minute request count is not reported; the day's is (limits)
            return {}
        limit, remaining, reset = tpm
        return {"x-ratelimit-limit-tokens": str(int(limit)),
                "x-ratelimit-remaining-tokens": str(int(remaining)),
                "x-ratelimit-reset-tokens": groq_duration(reset)}

    def limits(self, key: str, tokens: int) -> tuple[bool, dict[str, str], float, str]:
        ok, (limit, remaining, reset), wait = self._take(key, _DAY_BUCKET, self.requests_per_day,
                                                         1, window=self.day)
        day = {"x-ratelimit-limit-requests": str(int(limit)),
               "x-ratelimit-remaining-requests": str(int(remaining)),
               "x-ratelimit-reset-requests": groq_duration(reset)}
        if not ok:
            return False, day, wait, _DAY_BUCKET
        ok, headers, wait, which = super().limits(key, tokens)
        if not ok:  # refused per minute: the day's request was not used
            with self._lock:
                self._buckets[(key, _DAY_BUCKET)][0] += 1
        return ok, {**day, **headers}, wait, which

    def throttled(self, which: str, wait: float, rl_headers: Any) -> Reply:
        kind = "requests" if which == _DAY_BUCKET else which
        window = {"requests": "requests per minute (RPM)", "tokens": "tokens per minute (TPM)",
                  _DAY_BUCKET: "requests per day (RPD)"}.get(which, which)
        reply = super().throttled(kind, wait, rl_headers)
        reply.headers.pop("retry-after-ms", None)
        reply.body["error"]["message"] = (f"Rate limit reached on {window}. Please try again in "
                                          f"{groq_duration(wait)}.")
        return reply

    def model(self, req: Request) -> Reply:
        req.params["model"] = unquote(req.params["model"])  # the SDK sends openai%2Fgpt-oss-20b
        return super().model(req)

    # -- answers: OpenAI's, with x_groq --------------------------------------------------------
    def chat(self, req: Request) -> Reply | Stream:
        body = req.data
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        if body.get("stream"):  # Groq always counts; the usage chunk goes out only if asked
            req.data = {**body, "stream_options": {**(body.get("stream_options") or {}),
                                                   "include_usage": True}}
        answer = super().chat(req)
        request_id = answer.headers["x-request-id"]
        if isinstance(answer, Stream):
            answer.events = _with_x_groq(answer.events, request_id, self.seed, asked)
        else:
            answer.body["usage"] = _timed(answer.body["usage"])
            answer.body["x_groq"] = {"id": request_id, "seed": self.seed,
                                     "usage": {"dram_cached_tokens": 0, "sram_cached_tokens": 0}}
        return answer


def _with_x_groq(events: Iterable[bytes], request_id: str, seed: int,
                 usage_chunk: bool) -> Iterator[bytes]:
    """An OpenAI stream that counted its usage, as Groq sends it: ``x_groq.id`` on the first
    and last chunk, the usage in the last one's ``x_groq.usage``; the usage chunk (and the
    ``usage: null`` of the others) only when ``usage_chunk``."""
    last: dict[str, Any] | None = None  # held back: the last chunk gets the usage
    usage: dict[str, Any] = {}
    for event in events:
        if event == b"data: [DONE]\n\n":
            if last is not None:
                last["x_groq"] = {**last.get("x_groq", {}), "id": request_id, "seed": seed,
                                  "usage": _timed(usage)}
                yield sse_event(last)
            yield event
            return
        chunk = json.loads(event[len(b"data: "):])
        if not chunk["choices"] and chunk.get("usage"):
            usage = chunk["usage"]
            if not usage_chunk:
                continue
        elif not usage_chunk:
            chunk.pop("usage", None)
        if last is None:
            chunk["x_groq"] = {"id": request_id}
        else:
            yield sse_event(last)
        last = chunk
