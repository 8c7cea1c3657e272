"""Ollama's native API, emulated (see shared PROTOCOLS.md section 5).

Routes below ``/ollama`` (its base path is the root, as Ollama's is): ``GET /`` ("Ollama is
running"), ``POST /api/chat`` and ``/api/generate`` (NDJSON streams unless ``"stream":
false``: streaming is the default, as Ollama's is; the last line is ``done: true`` with
``done_reason``, the counts and the durations in nanoseconds), ``/api/embed`` (unit vectors,
``truncate``, ``dimensions``), the legacy ``/api/embeddings`` (``prompt`` -> one vector, not
normalized), ``/api/show``, ``/api/pull`` (streamed progress, or one ``success`` line with
``"stream": false``), ``DELETE /api/delete``, ``GET /api/tags``, ``/api/ps``, ``/api/version``.

No key is needed (a ``ServiceConfig.keys`` list puts an authenticating proxy in front:
``Authorization: Bearer``). Errors are ``{"error": "..."}``: 400 for a refused body (Go's
wording), 404 ``model "x" not found, try pulling it first``, 503 ``server busy`` (an injected
``503``: the queue is full), an in-stream failure an ``{"error": ...}`` line after the 200.
An unknown route answers as Go's router does: 404 ``404 page not found`` in plain text.

Models are ``name:tag`` (``latest`` when no tag). ``pull`` installs the models of
:data:`LIBRARY`; another name streams a manifest error line. ``OllamaService.has_embed =
False`` makes it an old server without ``/api/embed``. With ``tools``, the model calls the
first tool after a user turn (arguments from the tool's schema); with ``think``, the reply's
reasoning comes first in ``message.thinking`` (apart from ``content``). Replies and vectors are
deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from ._rules import AnyValue, Array, Body, Bool, Int, Model, Num, Obj, OneOf, Str, Violation
from ._server import (
    APIFailure,
    Reply,
    Request,
    Route,
    Service,
    ServiceConfig,
    Stream,
    count_tokens,
    embedding_for,
    reply_text,
    tool_arguments,
)

__all__ = ["CHAT_MODELS", "EMBED_MODELS", "LIBRARY", "OllamaService"]

VERSION = "0.12.6"
#: Installed chat models -> (family, parameter size, context length).
CHAT_MODELS = {"llama3.2:latest": ("llama", "3.2B", 131072), "llama3.1:8b": ("llama", "8.0B", 131072),
               "qwen2.5:0.5b": ("qwen2", "494.03M", 32768), "llava:latest": ("llama", "7B", 32768)}
#: Installed embedding models -> (dimensions, context length).
EMBED_MODELS = {"nomic-embed-text:latest": (768, 2048), "all-minilm:latest": (384, 256),
                "mxbai-embed-large:latest": (1024, 512)}
#: Models ``/api/pull`` can fetch (not installed until pulled).
LIBRARY = {"tinyllama:latest": ("llama", "1B", 2048), "smollm2:135m": ("llama", "134.52M", 8192)}
DEFAULT_CONTEXT = 4096
DEFAULT_NUM_PREDICT = 64
DEFAULT_EMBED_DIM = 768
LEGACY_SCALE = 3.5  # /api/embeddings vectors are not normalized
KEEP_ALIVE = 300.0  # seconds a model stays loaded
THINKING = "Thinking..."  # the first piece of a reply's reasoning (with ``think``)
BUSY = "server busy, please try again.  maximum pending requests exceeded"
NS_PER_TOKEN, NS_PER_PROMPT_TOKEN, NS_LOAD = 20_000_000, 1_000_000, 1_500_000

# -- request rules (github.com/ollama/ollama/api/types.go; Go ignores unknown fields) -------------

FREE = Obj(extra="allow")
OPTIONS = Obj(num_predict=Int(), num_ctx=Int(min=1), temperature=Num(), top_p=Num(), top_k=Int(),
              min_p=Num(), seed=Int(), stop=Array(Str()), repeat_penalty=Num(),
              presence_penalty=Num(), frequency_penalty=Num(), num_keep=Int(), typical_p=Num(),
              repeat_last_n=Int(), num_batch=Int(), num_gpu=Int(), num_thread=Int(),
              use_mmap=Bool(), extra="allow")
KEEP = OneOf(Str(), Num())
THINK = OneOf(Bool(), Str(enum=("low", "medium", "high", "max")))
FORMAT = OneOf(Str(), FREE)
TOOL_CALL = Obj(id=Str(), function=Obj(index=Int(), name=Str(required=True),
                                       arguments=FREE, extra="allow"), extra="allow")
MESSAGE = Obj(role=Str(required=True, enum=("system", "user", "assistant", "tool")),
              content=Str(), images=Array(Str()), thinking=Str(), tool_calls=Array(TOOL_CALL),
              tool_name=Str(), tool_call_id=Str(), extra="allow")
TOOL = Obj(type=Str(), function=Obj(name=Str(required=True), description=Str(),
                                    parameters=AnyValue(), extra="allow"), extra="allow")
COMMON = {"model": Model(required=True), "options": OPTIONS, "keep_alive": KEEP, "stream": Bool(),
          "think": THINK, "format": FORMAT, "logprobs": Bool(), "top_logprobs": Int(min=0)}
CHAT = Body(COMMON, messages=Array(MESSAGE), tools=Array(TOOL), extra="allow")
GENERATE = Body(COMMON, prompt=Str(), suffix=Str(), system=Str(), template=Str(), raw=Bool(),
                images=Array(Str()), context=Array(Int()), extra="allow")
EMBED = Body(model=Model(required=True), input=OneOf(Str(), Array(Str())), truncate=Bool(),
             dimensions=Int(min=1), options=OPTIONS, keep_alive=KEEP, extra="allow")
LEGACY_EMBED = Body(model=Model(required=True), prompt=Str(), options=OPTIONS, keep_alive=KEEP,
                    extra="allow")
SHOW = Body(model=Model(), name=Model(), verbose=Bool(), extra="allow")
PULL = Body(model=Str(), name=Str(), insecure=Bool(), stream=Bool(), extra="allow")
DELETE = Body(model=Str(), name=Str(), extra="allow")

_GO_TYPES = {"string": "string", "integer": "int", "number": "float64", "boolean": "bool",
             "array": "[]interface {}", "object": "map[string]interface {}"}
_GO_VALUES = {"integer": "number", "number": "number", "boolean": "bool", "null": "null"}


def _wording(v: Violation) -> str:
    """A refused body as Ollama words it (Go's ``encoding/json`` for a wrong type)."""
    where = v.param or ""
    if v.kind == "json":
        return "invalid character looking for beginning of value"
    if v.kind == "missing":
        return f"{v.path[-1]} is required"
    if v.kind == "type":
        got = _GO_VALUES.get(v.got, v.got)
        want = _GO_TYPES.get(v.rule, v.rule.split(" or ")[0])
        return f"json: cannot unmarshal {got} into Go struct field .{where} of type {want}"
    if v.kind == "enum":
        return f"invalid {v.path[-1]} {v.got!r}: must be one of {', '.join(v.expected)}"
    return f"invalid {where}: {v.message}"


def full_name(model: str) -> str:
    """``name`` -> ``name:latest``; ``name:tag`` as it is."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


class OllamaService(Service):
    name = "ollama"
    models = (*CHAT_MODELS, *EMBED_MODELS)
    routes = (
        Route("GET", r"/", "root", auth=False),
        Route("POST", r"/api/chat", "chat", CHAT),
        Route("POST", r"/api/generate", "generate", GENERATE),
        Route("POST", r"/api/embed", "embed", EMBED),
        Route("POST", r"/api/embeddings", "legacy_embed", LEGACY_EMBED),
        Route("POST", r"/api/show", "show", SHOW),
        Route("POST", r"/api/pull", "pull", PULL),
        Route("DELETE", r"/api/delete", "delete", DELETE),
        Route("GET", r"/api/tags", "tags"),
        Route("GET", r"/api/ps", "ps"),
        Route("GET", r"/api/version", "version"),
    )

    def __init__(self, config: ServiceConfig, seed: int) -> None:
        if config.keys is None:  # Ollama itself asks for no key
            config.keys = ()
        super().__init__(config, seed)
        #: False: an old server without ``/api/embed`` (it answers 404, like any unknown route).
        self.has_embed = True
        self._installed = dict.fromkeys(self.models)
        self._loaded: dict[str, float] = {}  # model -> when it unloads (time.time())
        self._state = threading.Lock()

    # -- the service's conventions ----------------------------------------------------------
    def read_key(self, req: Request) -> str | None:
        auth = req.headers.get("authorization", "")
        return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        if code == "unknown_url":  # Go's router: plain text, and 404 for a wrong method too
            return Reply(404, "404 page not found", h, "text/plain")
        if code == "invalid_api_key":
            message = "unauthorized"
        elif kind == "server_error":  # an injected fault, or a handler's bug
            message = BUSY if status == 503 else "an error was encountered while running the model"
        return Reply(status, {"error": message}, h)

    def reject(self, violation: Violation) -> Reply:
        return self.error(400, _wording(violation), "invalid_request_error")

    def unknown_model(self, model: str) -> Reply:
        return self.error(404, f'model "{model}" not found, try pulling it first', "not_found")

    def stream_error_chunk(self) -> bytes:
        return _line({"error": "an error was encountered while running the model: unexpected EOF"})

    def knows_model(self, model: str) -> bool:
        name = full_name(model)
        with self._state:
            installed = name in self._installed
        return installed or model in self.config.models or name in self.config.models

    # -- helpers ----------------------------------------------------------------------------
    def _model_of(self, req: Request) -> str:
        """The body's model (``model`` or the older ``name``), known or the 404."""
        model = req.data.get("model") or req.data.get("name")
        if not model:
            raise APIFailure(400, "model is required")
        if not self.knows_model(model):
            raise APIFailure(404, f'model "{model}" not found, try pulling it first')
        return full_name(model)

    def _load(self, model: str, keep_alive: Any) -> None:
        with self._state:
            if keep_alive in (0, "0", "0s"):
                self._loaded.pop(model, None)
            else:
                self._loaded[model] = time.time() + KEEP_ALIVE

    def _stats(self, prompt_tokens: int, eval_tokens: int) -> dict[str, int]:
        prompt_ns, eval_ns = prompt_tokens * NS_PER_PROMPT_TOKEN, eval_tokens * NS_PER_TOKEN
        return {"total_duration": NS_LOAD + prompt_ns + eval_ns, "load_duration": NS_LOAD,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": prompt_ns,
                "eval_count": eval_tokens, "eval_duration": eval_ns}

    def _reply(self, prompt: str, options: dict[str, Any]) -> tuple[list[str], str]:
        """The reply's words (the stream's pieces) and its ``done_reason``."""
        limit = options.get("num_predict")
        limit = limit if isinstance(limit, int) and limit > 0 else DEFAULT_NUM_PREDICT
        text = reply_text(prompt, self.seed, limit)
        words = text.split(" ")
        reason = "length" if len(words) >= limit else "stop"
        for stop in options.get("stop") or []:
            if stop and stop in text:
                text, reason = text[:text.index(stop)], "stop"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(text.split(" ")) if w]
        return pieces or [""], reason

    def _answer(self, req: Request, model: str, head: dict[str, Any], prompt: str,
                pieces: list[dict[str, Any]], reason: str, final: dict[str, Any],
                tokens: int) -> Reply | Stream:
        """Each piece merged into ``head`` as a line; the ``done`` line with the stats."""
        self._load(model, req.data.get("keep_alive"))
        done = {**head, "created_at": _now(), **final, "done": True, "done_reason": reason,
                **self._stats(count_tokens(prompt), tokens)}
        if req.data.get("stream") is False:
            return Reply(200, done)
        lines = [{**head, "created_at": _now(), **p, "done": False} for p in pieces]
        return Stream((_line(x) for x in [*lines, done]), content_type="application/x-ndjson")

    def _check_capability(self, model: str, what: str) -> None:
        if model in EMBED_MODELS:
            raise APIFailure(400, f'"{model}" does not support {what}')

    # -- routes ---------------------------------------------------------------------------
    def root(self, req: Request) -> Reply:
        return Reply(200, "Ollama is running", content_type="text/plain; charset=utf-8")

    def chat(self, req: Request) -> Reply | Stream:
        model = self._model_of(req)
        self._check_capability(model, "chat")
        messages = req.data.get("messages") or []
        prompt = "\n".join(m.get("content") or "" for m in messages)
        head = {"model": req.data["model"]}
        tools = req.data.get("tools") or []
        if tools and messages and messages[-1]["role"] == "user":
            fn = tools[0].get("function") or {}
            call = {"function": {"index": 0, "name": fn["name"], "arguments": tool_arguments(
                fn.get("parameters"), reply_text(prompt, self.seed, 1))}}
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
            piece = {"message": message}
            return self._answer(req, model, head, prompt, [piece], "stop", piece,
                                count_tokens(json.dumps(call)))
        if not messages:  # loads (or, with keep_alive 0, unloads) the model
            reason = "unload" if req.data.get("keep_alive") in (0, "0", "0s") else "load"
            return self._answer(req, model, head, "", [], reason,
                                {"message": {"role": "assistant", "content": ""}}, 0)
        words, reason = self._reply(prompt, req.data.get("options") or {})
        pieces = [{"message": {"role": "assistant", "content": w}} for w in words]
        final: dict[str, str] = {"role": "assistant", "content": ""}
        if req.data.get("stream") is False:
            final["content"] = "".join(words)
        if req.data.get("think") not in (None, False):  # the reasoning comes first, apart
            thoughts = [f"{THINKING} " if i == 0 else w
                        for i, w in enumerate(reply_text("think:" + prompt, self.seed, 4).split(" "))]
            pieces = [{"message": {"role": "assistant", "content": "", "thinking": t}}
                      for t in thoughts] + pieces
            if req.data.get("stream") is False:
                final["thinking"] = "".join(thoughts)
        return self._answer(req, model, head, prompt, pieces, reason, {"message": final},
                            len(words))

    def generate(self, req: Request) -> Reply | Stream:
        model = self._model_of(req)
        self._check_capability(model, "generate")
        data = req.data
        prompt = "\n".join(x for x in (data.get("system"), data.get("prompt")) if x)
        head = {"model": data["model"]}
        if not data.get("prompt"):
            reason = "unload" if data.get("keep_alive") in (0, "0", "0s") else "load"
            return self._answer(req, model, head, "", [], reason, {"response": ""}, 0)
        words, reason = self._reply(prompt, data.get("options") or {})
        context = list(range(1, count_tokens(prompt) + len(words) + 1))
        final = {"response": "".join(words) if data.get("stream") is False else "",
                 "context": context}
        return self._answer(req, model, head, prompt, [{"response": w} for w in words], reason,
                            final, len(words))

    def _vector(self, model: str, text: str) -> np.ndarray:
        dim = EMBED_MODELS.get(model, (DEFAULT_EMBED_DIM, 0))[0]
        return embedding_for(text, dim, self.seed)

    def embed(self, req: Request) -> Reply:
        if not self.has_embed:
            return self.error(404, "", "", "unknown_url")
        model = self._model_of(req)
        data = req.data
        texts = data.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        context = EMBED_MODELS.get(model, (0, DEFAULT_CONTEXT))[1]
        rows = []
        for text in texts:
            if data.get("truncate") is False and count_tokens(text) > context:
                raise APIFailure(400, "the input length exceeds the context length")
            v = self._vector(model, text)
            dims = data.get("dimensions")
            if dims is not None:
                if dims > len(v):
                    raise APIFailure(400, f"invalid dimensions: {dims} is larger than the "
                                     f"model's {len(v)}")
                v = v[:dims] / np.linalg.norm(v[:dims])
            rows.append([round(float(x), 7) for x in v])
        self._load(model, data.get("keep_alive"))
        tokens = sum(count_tokens(t) for t in texts)
        return Reply(200, {"model": data["model"], "embeddings": rows,
                           "total_duration": NS_LOAD + tokens * NS_PER_PROMPT_TOKEN,
                           "load_duration": NS_LOAD, "prompt_eval_count": tokens})

    def legacy_embed(self, req: Request) -> Reply:
        model = self._model_of(req)
        text = req.data.get("prompt") or ""
        vector = self._vector(model, text) * LEGACY_SCALE if text else np.zeros(0)
        return Reply(200, {"embedding": [round(float(x), 7) for x in vector]})

    def _describe(self, model: str) -> dict[str, Any]:
        family, size = ("bert", "137M") if model in EMBED_MODELS else \
            (CHAT_MODELS.get(model) or LIBRARY.get(model) or ("llama", "7B"))[:2]
        return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                "parameter_size": size, "quantization_level": "Q4_K_M"}

    def _entry(self, model: str) -> dict[str, Any]:
        return {"name": model, "model": model, "modified_at": "2025-01-01T00:00:00Z",
                "size": 2_019_393_189 if model not in EMBED_MODELS else 274_302_450,
                "digest": _digest(model), "details": self._describe(model)}

    def show(self, req: Request) -> Reply:
        model = self._model_of(req)
        details = self._describe(model)
        embed = model in EMBED_MODELS
        context = EMBED_MODELS[model][1] if embed else \
            (CHAT_MODELS.get(model) or LIBRARY.get(model) or ("", "", DEFAULT_CONTEXT))[2]
        arch = details["family"]
        return Reply(200, {
            "modelfile": f"FROM {model}\n", "parameters": 'stop "<|eot_id|>"',
            "template": "{{ .Prompt }}", "details": details, "modified_at": "2025-01-01T00:00:00Z",
            "model_info": {"general.architecture": arch, f"{arch}.context_length": context,
                           **({f"{arch}.embedding_length": EMBED_MODELS[model][0]} if embed else {})},
            "capabilities": ["embedding"] if embed else
            ["completion", "tools"] + (["vision"] if model.startswith("llava") else [])})

    def pull(self, req: Request) -> Reply | Stream:
        name = req.data.get("model") or req.data.get("name")
        if not name:
            raise APIFailure(400, "model is required")
        model = full_name(name)
        known = model in LIBRARY or model in self.models
        digest = "sha256:" + _digest(model)
        total = 1_000_000
        if req.data.get("stream") is False:
            if not known:
                raise APIFailure(500, "pull model manifest: file does not exist")
            self._install(model)
            return Reply(200, {"status": "success"})

        def lines() -> Iterator[dict[str, Any]]:
            yield {"status": "pulling manifest"}
            if not known:
                yield {"error": "pull model manifest: file does not exist"}
                return
            yield {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
            for done in (250_000, 750_000, total):
                yield {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total,
                       "completed": done}
            yield {"status": "verifying sha256 digest"}
            yield {"status": "writing manifest"}
            self._install(model)
            yield {"status": "success"}

        return Stream(_lines(lines()), content_type="application/x-ndjson")

    def _install(self, model: str) -> None:
        with self._state:
            self._installed[model] = None

    def delete(self, req: Request) -> Reply:
        name = req.data.get("model") or req.data.get("name") or ""
        model = full_name(name) if name else ""
        with self._state:
            if self._installed.pop(model, False) is not False:
                self._loaded.pop(model, None)
                return Reply(200, b"", content_type="text/plain")
        return self.unknown_model(name)

    def tags(self, req: Request) -> Reply:
        with self._state:
            names = list(self._installed)
        extra = [m for m in self.config.models if full_name(m) not in names]
        return Reply(200, {"models": [self._entry(m) for m in [*names, *extra]]})

    def ps(self, req: Request) -> Reply:
        now = time.time()
        with self._state:
            loaded = {m: t for m, t in self._loaded.items() if t > now}
        return Reply(200, {"models": [
            {**self._entry(m), "expires_at": (datetime.now(timezone.utc) + timedelta(
                seconds=t - now)).isoformat().replace("+00:00", "Z"),
             "size_vram": self._entry(m)["size"], "context_length": DEFAULT_CONTEXT}
            for m, t in loaded.items()]})

    def version(self, req: Request) -> Reply:
        return Reply(200, {"version": VERSION})


def _lines(objs: Iterable[Any]) -> Iterator[bytes]:
    for obj in objs:
        yield _line(obj)
