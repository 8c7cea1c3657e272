"""Groq: the OpenAI wire format under ``/openai/v1``, with Groq's differences (PROTOCOLS.md §3).

- Parameters Groq answers with a 400 (``logprobs``, ``top_logprobs``, ``logit_bias``, ``n``
  other than 1, ``messages[].name``, transcript formats ``srt``/``vtt``) are refused here,
  with a ``ValueError``, before anything is sent.
- A stream's usage arrives in ``x_groq.usage`` on its last chunk (no ``stream_options``
  needed); ``x_groq.error`` says why a stream stopped early.
- ``x-ratelimit-*-requests`` counts requests per *day* (``-tokens`` per minute). The
  per-minute request bucket is not a day's budget, so a day's count never lowers it, except
  when the day's requests have run out: then the bucket waits until the day's window gives
  one back (Groq refills it continuously, so that is ``reset / limit`` seconds).
- Operations: chat, stream_chat, list_models, transcribe. No legacy completions, images,
  speech or embeddings: :class:`~ipfs_accelerate_api.errors.UnsupportedOperation`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..engine import RateLimitInfo
from ..errors import StreamInterrupted
from ..transport import SSEEvent
from ._shape import as_dict
from .base import STREAM_END, Backend, Plan
from .openai import OpenAIBackend, _usage

__all__ = ["REFUSED_PARAMS", "GroqBackend"]

#: Chat parameters Groq refuses with a 400 whatever their value.
REFUSED_PARAMS = ("logprobs", "top_logprobs", "logit_bias")
#: Transcript formats Groq does not write.
REFUSED_TRANSCRIPT_FORMATS = ("srt", "vtt")


class GroqBackend(OpenAIBackend):
    name = "groq"
    requests_window = None  # a day's count: read below
    env_prefix = "GROQ"
    default_base_url = "https://api.groq.com/openai/v1"
    stream_include_usage = False  # the usage comes in x_groq.usage anyway
    transcribe_model = "whisper-large-v3-turbo"

    # Operations the OpenAI adapter has and Groq does not.
    _plan_complete = None  # type: ignore[assignment]
    _plan_generate_image = None  # type: ignore[assignment]
    _plan_speech = None  # type: ignore[assignment]
    _plan_embed = Backend._plan_embed

    def _chat_body(self, messages: list[dict[str, Any]], model: str, params: dict[str, Any]) -> dict[str, Any]:
        refused = [p for p in REFUSED_PARAMS if p in params]
        if refused:
            raise ValueError(f"groq does not support {', '.join(refused)} (it answers 400 "
                             "whatever the value): leave them out")
        n = params.get("n")
        if n is not None and (isinstance(n, bool) or n != 1):
            raise ValueError(f"groq supports only n=1, got n={n!r}")
        body = super()._chat_body(messages, model, params)
        for i, m in enumerate(body["messages"]):
            if "name" in m and m.get("role") != "function":
                raise ValueError(f"groq does not support messages[{i}]['name']: leave it out")
        return body

    def _plan_transcribe(self, file: Any, *, model: str, filename: str | None = None,
                         **params: Any) -> Plan:
        fmt = params.get("response_format")
        if fmt in REFUSED_TRANSCRIPT_FORMATS:
            raise ValueError(f"groq does not write {fmt} transcripts: use json, text or verbose_json")
        return super()._plan_transcribe(file, model=model, filename=filename, **params)

    def _stream_chunk(self, ev: SSEEvent) -> Any:
        chunk = super()._stream_chunk(ev)
        if chunk is STREAM_END or chunk.raw.get("x_groq") is None:
            return chunk
        x_groq = as_dict(chunk.raw["x_groq"], "chunk.x_groq")
        if x_groq.get("error"):
            raise StreamInterrupted(f"{self.name}: stream stopped early: {str(x_groq['error'])[:500]}",
                                    backend=self.name)
        if chunk.usage is None and x_groq.get("usage") is not None:
            chunk.usage = _usage(x_groq["usage"])
        return chunk

    def _ratelimit_info(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        info = super()._ratelimit_info(headers)
        if info is None or info.remaining_requests is None:
            return info
        if info.remaining_requests > 0:  # a day's budget says nothing about this minute
            return dataclasses.replace(info, remaining_requests=None, reset_requests=None)
        reset = info.reset_requests
        try:
            limit = float(headers.get("x-ratelimit-limit-requests") or "nan")
        except ValueError:
            limit = float("nan")
        if reset is not None and limit >= 1:
            reset /= limit  # the full window's refill time, over one request's share of it
        return dataclasses.replace(info, reset_requests=reset)
