"""Response types shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChatChunk", "ChatMessage", "ChatResponse", "CompletionResponse", "ToolCall", "Usage"]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # as the service sent it (a JSON string for OpenAI)
    type: str = "function"


@dataclass
class ChatMessage:
    role: str
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class ChatResponse:
    text: str
    message: ChatMessage
    finish_reason: str | None
    usage: Usage
    model: str | None
    request_id: str | None
    raw: Any = field(repr=False, default=None)


@dataclass
class ChatChunk:
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    raw: Any = field(repr=False, default=None)


@dataclass
class CompletionResponse:
    text: str
    finish_reason: str | None
    usage: Usage
    model: str | None
    request_id: str | None
    raw: Any = field(repr=False, default=None)
