"""The request path against hostile servers and hostile callers: every call bounded, every bad
input a typed error, no key in any error, no socket held by a failed stream.

Time bounds are shown without timing the client: the hostile server would drip or ping for far
longer than the test allows, and records how much it had sent when the client hung up.
"""

from __future__ import annotations

import gc
import json
import threading

import numpy as np
import pytest

import ipfs_accelerate_api as ia
from ipfs_accelerate_api import BreakerPolicy, Priority, RetryPolicy, Timeouts
from ipfs_accelerate_api.errors import (
    AcceleratorError,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    ResponseFormatError,
    StreamInterrupted,
    StreamTimeoutError,
)
from ipfs_accelerate_api.transport import iter_sse

from .conftest import MSG
from .hostile import CHUNK, HostileServer, free_port

NO_RETRY = RetryPolicy(max_retries=0)


@pytest.fixture
def hostile():
    with HostileServer(drip=0.05, hold=20.0) as server:
        yield server


@pytest.fixture
def client(hostile):
    made = []

    def factory(path: str = "", **options):
        options.setdefault("api_key", "sk-test")
        options.setdefault("retry", NO_RETRY)
        b = ia.backend("openai", base_url=hostile.url + path, **options)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.close()


def _hung_up_early(server: HostileServer) -> bool:
    """The server's one connection ended before it had sent everything it meant to."""
    (_, sent, total), = server.wait_written(1)
    return sent < total


# -- 1-3: time limits that actually limit --------------------------------------------------

@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_total_bounds_a_dripping_attempt(client, hostile, path) -> None:
    # 200+ bytes at one per 50 ms would take over 10 s; each byte resets the read timeout.
    ai = client(path, timeout=Timeouts(read=5, total=0.5))
    with pytest.raises(APITimeoutError, match="Timeouts.total"):
        ai.chat(MSG, model="m")
    assert _hung_up_early(hostile)


def test_deadline_bounds_the_attempt_in_progress(client, hostile) -> None:
    ai = client("/silent", timeout=Timeouts(read=10), retry=RetryPolicy(max_retries=3, deadline=0.5))
    with pytest.raises(APITimeoutError, match="deadline"):
        ai.chat(MSG, model="m")
    assert len(hostile.requests) == 1  # ended at the deadline: no retry after it
    assert ai.stats()["failed"] == 1


def test_deadline_bounds_a_dripping_server(client, hostile) -> None:
    ai = client("/drip-body", retry=RetryPolicy(max_retries=0, deadline=0.5))
    with pytest.raises(APITimeoutError):
        ai.chat(MSG, model="m")
    assert _hung_up_early(hostile)


def test_deadline_ends_a_call_waiting_in_the_queue(client, hostile) -> None:
    # One slot, held by a silent request; the queued call's deadline passes while it waits.
    ai = client("/silent", max_concurrency=1, timeout=Timeouts(read=10),
                retry=RetryPolicy(max_retries=0))
    blocker = ai.submit("chat", MSG, model="m")
    queued = ai.engine.submit(lambda attempt: "never", deadline=0.2)
    with pytest.raises(APITimeoutError, match="waiting"):
        queued.result(timeout=30)
    assert ai.stats()["failed"] == 1
    ai.close()
    with pytest.raises(AcceleratorError):
        blocker.result(timeout=30)


def test_stream_idle_ends_a_stream_of_pings(hostile, client) -> None:
    # A stream that sent one chunk, then only comments: the comments are not events.
    hostile.max_pieces = 1000
    ai = client("/slow-stream", timeout=Timeouts(stream_idle=0.3))
    hostile.drip = 0.01
    it = ai.stream_chat(MSG, model="m")
    first = next(it)
    assert first.text == "tick "
    hostile.drip = 5.0  # the server now waits far longer than the idle bound between events
    with pytest.raises(StreamTimeoutError) as info:
        for _ in it:
            pass
    assert isinstance(info.value, StreamInterrupted) and isinstance(info.value, APITimeoutError)
    assert info.value.partial_text.startswith("tick ")
    assert "stream_idle" in str(info.value)


def test_pings_alone_do_not_keep_a_stream_open(client, hostile) -> None:
    hostile.drip = 0.02
    hostile.max_pieces = 2000  # 40 s of ": ping"
    ai = client("/ping-stream", timeout=Timeouts(read=5, stream_idle=0.3))
    with pytest.raises(APITimeoutError, match="stream_idle"):
        ai.stream_chat(MSG, model="m")  # no event at all: the attempt fails (and may be retried)
    assert _hung_up_early(hostile)


def test_stream_total_bounds_a_busy_stream(client, hostile) -> None:
    hostile.drip = 0.01
    hostile.max_pieces = 3000  # 30 s of chunks, each an event
    ai = client("/slow-stream", timeout=Timeouts(stream_idle=5, stream_total=0.5))
    with pytest.raises(StreamTimeoutError, match="stream_total") as info:
        for _ in ai.stream_chat(MSG, model="m"):
            pass
    assert info.value.partial_text.startswith("tick tick")
    assert _hung_up_early(hostile)


def test_stream_defaults_suit_llm_streams() -> None:
    t = Timeouts()
    assert 10 <= t.stream_idle <= 120 and t.stream_total is None and t.total is None


# -- 4-8: errors that are typed, and never carry a secret -------------------------------

def test_connection_refused_is_a_connection_error_not_a_timeout() -> None:
    with ia.backend("openai", base_url=f"http://127.0.0.1:{free_port()}", api_key="k",
                    retry=NO_RETRY) as ai:
        with pytest.raises(APIConnectionError) as info:
            ai.chat(MSG, model="m")
    assert not isinstance(info.value, APITimeoutError)


@pytest.mark.parametrize("key,problem", [
    ("sk-abc\r\nX-Injected: 1", "line break"),
    ("sk-ab\ncd", "line break"),
    ("sk-\x00abc", "control character"),
    ("sk-\x7fabc", "control character"),
    ("sk-ключ", "non-ASCII"),
    ("sk-abc\u2019", "non-ASCII"),
])
def test_unsafe_keys_are_refused_when_built(key, problem) -> None:
    with pytest.raises(ConfigurationError, match=problem) as info:
        ia.backend("openai", base_url="http://127.0.0.1:9", api_keys=["sk-fine", key])
    assert "key 2" in str(info.value)
    assert key.strip() not in str(info.value) and "sk-" not in str(info.value)


def test_unsafe_extra_headers_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="line break"):
        ia.backend("openai", base_url="http://127.0.0.1:9", api_key="k",
                   headers={"OpenAI-Organization": "org\r\nX: y"})
    with pytest.raises(ConfigurationError, match="header name"):
        ia.backend("openai", base_url="http://127.0.0.1:9", api_key="k", headers={"Bad Name": "v"})


def test_extra_headers_are_sent(client, hostile) -> None:
    hostile.body = json.dumps({"data": [{"id": "m1"}]}).encode()
    ai = client(headers={"OpenAI-Organization": "org-1"})
    assert ai.list_models() == ["m1"]
    assert hostile.requests[-1][1]["OpenAI-Organization"] == "org-1"


def test_a_key_echoed_by_the_service_is_redacted(client, hostile, caplog) -> None:
    canary = "sk-CANARY-7f3a9"
    ai = client("/echo-key", api_key=canary)
    with caplog.at_level("DEBUG", logger="ipfs_accelerate_api"):
        errors = []
        for _ in range(2):  # the 401 itself, then "every key is disabled" with its reason
            with pytest.raises(AuthenticationError) as info:
                ai.list_models()
            errors.append(info.value)
    first = errors[0]
    assert "[redacted]" in json.dumps(first.body) and "[redacted]" in first.headers["X-Echo"]
    assert "[redacted]" in first.message
    for err in errors:
        seen = " ".join([str(err), repr(err), err.message, json.dumps(err.body),
                         json.dumps(err.headers), str(err.args)])
        assert canary not in seen
    assert canary not in caplog.text and canary not in json.dumps(ai.stats())


def test_short_keys_are_redacted_only_where_they_stand_alone(client, hostile) -> None:
    ai = client("/echo-key", api_key="abc")
    with pytest.raises(AuthenticationError) as info:
        ai.list_models()
    assert info.value.message == "invalid credentials: Bearer [redacted]"
    assert "credentials" in str(info.value)  # "abc" inside words is left alone


def _answer(hostile: HostileServer, obj) -> None:
    hostile.body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()


@pytest.mark.parametrize("usage", [
    b'{"prompt_tokens": 1e400}', b'{"prompt_tokens": Infinity}', b'{"completion_tokens": -3}',
    b'{"total_tokens": "12"}', b'{"prompt_tokens": 1.5}', b'{"prompt_tokens": true}', b'[1]',
])
def test_bad_usage_counts_are_format_errors(client, hostile, usage) -> None:
    _answer(hostile, b'{"choices": [{"message": {"role": "assistant", "content": "x"}}], '
                     b'"usage": ' + usage + b"}")
    with pytest.raises(ResponseFormatError, match="usage"):
        client().chat(MSG, model="m")


@pytest.mark.parametrize("data,problem", [
    ([{"index": 0, "embedding": [1, 2]}, {"index": 0, "embedding": [3, 4]}], "repeated"),
    ([{"index": -1, "embedding": [1, 2]}, {"index": 0, "embedding": [3, 4]}], "index"),
    ([{"index": 0, "embedding": [1, 2]}, {"index": 2, "embedding": [3, 4]}], "range"),
    ([{"index": 0, "embedding": [1, 2]}, {"index": 1, "embedding": [3]}], "dimensions"),
    ([{"index": 0, "embedding": [1, 2]}, {"index": 1, "embedding": [[3, 4]]}], "embedding"),
    ([{"index": 0, "embedding": []}, {"index": 1, "embedding": []}], "vector"),
    ([{"index": 0, "embedding": [1, "2"]}, {"index": 1, "embedding": [3, 4]}], "embedding"),
    ([{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": "AAAAAA=="}], "float32"),
    ([{"index": "0", "embedding": [1, 2]}, {"index": 1, "embedding": [3, 4]}], "index"),
])
def test_bad_embeddings_are_format_errors(client, hostile, data, problem) -> None:
    _answer(hostile, {"data": data})
    with pytest.raises(ResponseFormatError, match=problem):
        client().embed(["a", "b"], model="m", encoding_format="float")


def test_embeddings_out_of_order_are_put_in_order(client, hostile) -> None:
    _answer(hostile, {"data": [{"index": 1, "embedding": [3, 4]}, {"index": 0, "embedding": [1, 2]}]})
    got = client().embed(["a", "b"], model="m", encoding_format="float")
    assert got.tolist() == [[1.0, 2.0], [3.0, 4.0]] and got.dtype == np.float32


def _sse_body(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


def test_non_string_stream_content_is_a_format_error(client, hostile) -> None:
    hostile.ctype = "text/event-stream"
    _answer(hostile, _sse_body(
        b'{"choices": [{"index": 0, "delta": {"content": "ok "}}]}',
        b'{"choices": [{"index": 0, "delta": {"content": 42}}]}', b"[DONE]"))
    with pytest.raises(StreamInterrupted) as info:
        for _ in client().stream_chat(MSG, model="m"):
            pass
    assert info.value.partial_text == "ok "
    assert isinstance(info.value.__cause__, ResponseFormatError)


def test_a_non_string_first_chunk_is_a_format_error(client, hostile) -> None:
    hostile.ctype = "text/event-stream"
    _answer(hostile, _sse_body(b'{"choices": [{"delta": {"content": ["x"]}}]}', b"[DONE]"))
    with pytest.raises(ResponseFormatError):
        client().stream_chat(MSG, model="m")


@pytest.mark.parametrize("retry", [b"\xc2\xb2", b"1" * 5000, b"-5", b"1.5", b" 12", b"\xd9\xa3"])
def test_sse_ignores_a_retry_field_that_is_not_plain_digits(retry) -> None:
    events = list(iter_sse(iter([b"retry: " + retry + b"\ndata: x\n\n"])))
    assert [(e.data, e.retry) for e in events] == [("x", None)]
    assert [e.retry for e in iter_sse(iter([b"retry: 3000\ndata: y\n\n"]))] == [3000]


# -- 9-10: bad caller input, caught before anything is sent ------------------------------

@pytest.mark.parametrize("model", [None, "", "   ", 42, ["gpt"], "gpt\n4"])
def test_bad_model_is_a_value_error_naming_it(client, hostile, model) -> None:
    ai = client()
    for call in (lambda: ai.chat(MSG, model=model), lambda: ai.embed(["a"], model=model),
                 lambda: ai.complete("a", model=model),
                 lambda: ai.submit("chat", MSG, model=model)):
        with pytest.raises(ValueError, match="model"):
            call()
    with pytest.raises(ValueError, match="model"):
        ai.chat(MSG)  # missing
    assert hostile.requests == [] and ai.stats()["submitted"] == 0


@pytest.mark.parametrize("messages,error", [
    ([], ValueError), ("hello", ValueError), ([["user", "hi"]], TypeError),
    ([{"content": "hi"}], TypeError), ([{"role": 1, "content": "hi"}], TypeError),
    ([{"role": "user", "content": 5}], TypeError), ([{"role": "user"}], TypeError),
    ([{"role": "user", "content": None}], TypeError),
    ([{"role": "user", "content": [{"text": "no type"}]}], TypeError),
    ([{"role": "user", "content": ["bare string part"]}], TypeError),
])
def test_bad_messages_are_refused_before_sending(client, hostile, messages, error) -> None:
    ai = client()
    with pytest.raises(error, match="messages"):
        ai.chat(messages, model="m")
    with pytest.raises(error, match="messages"):
        ai.stream_chat(messages, model="m")
    assert hostile.requests == []


def test_valid_message_shapes_are_accepted(client, hostile) -> None:
    _answer(hostile, {"choices": [{"message": {"role": "assistant", "content": "fine"}}]})
    ai = client()
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:,"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert ai.chat(msgs, model="m").text == "fine"
    assert json.loads(hostile.requests[-1][2])["messages"] == msgs


@pytest.mark.parametrize("texts", [{"a": 1}, b"bytes", {"x", "y"}, 42, [1, 2], ["ok", None]])
def test_bad_embed_input_is_a_type_error(client, hostile, texts) -> None:
    with pytest.raises(TypeError, match="embed"):
        client().embed(texts, model="m")
    assert hostile.requests == []


@pytest.mark.parametrize("priority", [99, -1, 3, "HIGH", 1.0, True, None])
def test_bad_priority_is_refused_on_every_path(client, hostile, priority) -> None:
    ai = client()
    for call in (lambda: ai.chat(MSG, model="m", priority=priority),
                 lambda: ai.submit("chat", MSG, model="m", priority=priority),
                 lambda: ai.embed(["a"], model="m", priority=priority),
                 lambda: ai.submit("embed", ["a"], model="m", priority=priority),
                 lambda: ai.engine.submit(lambda a: 1, priority=priority),
                 lambda: ai.engine.call(lambda a: 1, priority=priority)):
        with pytest.raises(ValueError, match="priority"):
            call()
    s = ai.stats()
    assert s["submitted"] == 0 and s["succeeded"] + s["failed"] == 0
    assert hostile.requests == []


def test_priority_enum_and_its_values_are_accepted(client, hostile) -> None:
    _answer(hostile, {"data": [{"id": "m1"}]})
    ai = client()
    assert ai.submit("list_models", priority=Priority.LOW).result() == ["m1"]
    assert ai.list_models(priority=0) == ["m1"]


@pytest.mark.parametrize("url,problem", [
    ("http://user:hunter2@127.0.0.1:9/v1", "credentials"),
    ("http://:hunter2@127.0.0.1:9/v1", "credentials"),
    ("http://127.0.0.1:9/v1?api-version=1", "query"),
    ("http://127.0.0.1:9/v1#frag", "fragment"),
    ("http://127.0.0.1:9/v1?", "query"),
    ("ftp://127.0.0.1/v1", "http"),
    ("http:///v1", "host"),
    ("http://127.0.0.1:99999/v1", "port"),
    ("http://127.0.0.1:9/v 1", "spaces"),
])
def test_bad_base_urls_are_refused(url, problem) -> None:
    with pytest.raises(ConfigurationError, match=problem) as info:
        ia.backend("openai", base_url=url, api_key="k")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("option,expected", [
    ("retry", "RetryPolicy"), ("breaker", "BreakerPolicy"), ("timeout", "Timeouts")])
@pytest.mark.parametrize("value", [5, 2.5, "fast", [1]])
def test_policy_options_of_the_wrong_type_are_type_errors(option, expected, value) -> None:
    with pytest.raises(TypeError, match=expected):
        ia.backend("openai", base_url="http://127.0.0.1:9", api_key="k", **{option: value})


def test_policy_options_accept_a_mapping_of_fields(client, hostile) -> None:
    ai = client("/silent", retry={"max_retries": 0, "deadline": 0.3},
                breaker={"failure_threshold": 9}, timeout={"read": 5})
    with pytest.raises(APITimeoutError):
        ai.chat(MSG, model="m")
    for _ in range(7):  # eight failures in all: still closed, the threshold is nine
        with pytest.raises(APITimeoutError):
            ai.chat(MSG, model="m")
    assert ai.stats()["breaker"]["state"] == "CLOSED"
    with pytest.raises(APITimeoutError):
        ai.chat(MSG, model="m")
    assert ai.stats()["breaker"]["state"] == "OPEN"
    with pytest.raises(ConfigurationError, match="unknown"):
        ia.backend("openai", base_url="http://127.0.0.1:9", api_key="k", retry={"retries": 3})


@pytest.mark.parametrize("build", [
    lambda: Timeouts(read=float("nan")), lambda: Timeouts(read=-1), lambda: Timeouts(connect=0),
    lambda: Timeouts(total=float("inf")), lambda: Timeouts(stream_idle=-1),
    lambda: Timeouts(stream_total=float("nan")), lambda: Timeouts(read="5"),
    lambda: RetryPolicy(base_delay=float("nan")), lambda: RetryPolicy(max_retries=1.5),
    lambda: RetryPolicy(deadline=0), lambda: RetryPolicy(max_delay=-1),
    lambda: BreakerPolicy(failure_threshold=0), lambda: BreakerPolicy(recovery_timeout=float("nan")),
])
def test_nonsense_policy_values_are_refused(build) -> None:
    with pytest.raises(ConfigurationError):
        build()


@pytest.mark.parametrize("option", [{"rpm": 0}, {"tpm": 0}, {"rpm": -5}, {"rpm": float("nan")},
                                    {"tpm": "100"}, {"max_concurrency": 0}, {"queue_size": 0},
                                    {"batch_size": 0}, {"batch_timeout": -1}])
def test_nonsense_limits_are_refused(option) -> None:
    with pytest.raises(ConfigurationError):
        ia.backend("openai", base_url="http://127.0.0.1:9", api_key="k", **option)


def test_no_limit_is_none() -> None:
    with ia.backend("openai", base_url="http://127.0.0.1:9", api_key="k", rpm=None, tpm=None) as ai:
        assert ai.stats()["submitted"] == 0


# -- 11: a failed stream releases its connection before raising ------------------------

def _open_sockets_to(port: int) -> int:
    from .test_resilience import _client_sockets

    n = _client_sockets(port)
    if n is None:
        pytest.skip("needs /proc")
    return n


@pytest.mark.parametrize("tail", [
    b'data: {"choices": [{"delta": {"content": 7}}]}\n\n',  # bad content
    b"data: \xff\xfe\n\n",  # bad UTF-8: raised inside the reader's generators
    b'data: {"error": {"message": "overloaded"}}\n\n',  # in-stream error
    b"data: {not json\n\n",
])
@pytest.mark.parametrize("first", [True, False], ids=["after-first-event", "first-event"])
def test_a_failed_stream_holds_no_socket_while_its_error_is_kept(client, hostile, tail, first) -> None:
    # The server keeps each connection open after the bad event: only the client can close it.
    hostile.tail = tail
    if not first:
        hostile.first = b""
    ai = client("/tail-then-hold")
    port = hostile.server_address[1]
    kept = []
    for _ in range(3):
        try:
            for _chunk in ai.stream_chat(MSG, model="m"):
                pass
        except ResponseFormatError as exc:  # StreamInterrupted once the stream had started
            kept.append(exc)  # the caller holds the exception (and its traceback)
    assert len(kept) == 3
    if first:
        assert all(isinstance(e, StreamInterrupted) and e.partial_text == "tick " for e in kept)
    gc.collect()
    assert _open_sockets_to(port) == 0


def test_an_abandoned_stream_frees_its_connection(client, hostile) -> None:
    hostile.drip = 0.01
    hostile.max_pieces = 5000
    ai = client("/slow-stream")
    it = ai.stream_chat(MSG, model="m")
    assert next(it).text == "tick "
    del it
    gc.collect()
    assert _hung_up_early(hostile)


def test_many_bounded_calls_leave_no_watchdog_behind(client, hostile) -> None:
    _answer(hostile, {"data": [{"id": "m1"}]})
    ai = client(timeout=Timeouts(total=5), max_concurrency=4)
    futures = [ai.submit("list_models") for _ in range(50)]
    assert all(f.result(timeout=30) == ["m1"] for f in futures)
    ai.close()
    alive = [t.name for t in threading.enumerate() if t.name.startswith("ipfs-accel-")]
    assert alive == []


def test_chunk_fixture_is_a_chat_chunk() -> None:
    # The hostile server's stream chunk is a valid OpenAI chunk (so the tests above test bounds).
    (ev,) = list(iter_sse(iter([CHUNK])))
    assert json.loads(ev.data)["choices"][0]["delta"]["content"] == "tick "
