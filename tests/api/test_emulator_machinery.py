"""The emulator's shared machinery: request rules, the service's own refusal, unknown models,
and handlers that raise (answered, never a dropped connection, and recorded)."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import urllib3

from ipfs_accelerate_api.emulator import Emulator
from ipfs_accelerate_api.emulator._rules import (
    AnyValue,
    Array,
    Body,
    Bool,
    File,
    Int,
    Map,
    Model,
    Num,
    Obj,
    OneOf,
    Str,
    Tagged,
    Upload,
    Violation,
)
from ipfs_accelerate_api.emulator._server import (
    EmulatorServer,
    Reply,
    Request,
    Route,
    Service,
    ServiceConfig,
    Stream,
)

# -- rules on their own ------------------------------------------------------------------------------

PET = Tagged("kind", {"cat": Obj(lives=Int(min=0, max=9)), "dog": Obj(good=Bool(required=True))})
BODY = Body(
    model=Model(required=True),
    pets=Array(PET, min_items=1),
    name=OneOf(Str(min_len=1), Array(Str(), min_items=1)),
    tags=Map(Str(max_len=3)),
    score=Num(min=0, max=1, nullable=False),
    extra_data=Obj(extra="allow", id=Int(required=True)),
    anything=AnyValue(),
)


@pytest.mark.parametrize("data,path,kind", [
    ({}, ("model",), "missing"),
    ({"model": None}, ("model",), "type"),
    ({"model": "m", "colour": 1}, ("colour",), "unknown"),
    ({"model": "m", "pets": []}, ("pets",), "too_short"),
    ({"model": "m", "pets": [{"kind": "cat"}, {"lives": 3}]}, ("pets", 1, "kind"), "missing"),
    ({"model": "m", "pets": [{"kind": "fish"}]}, ("pets", 0, "kind"), "enum"),
    ({"model": "m", "pets": [{"kind": 3}]}, ("pets", 0, "kind"), "type"),
    ({"model": "m", "pets": [{"kind": "cat", "lives": 10}]}, ("pets", 0, "lives"), "above_max"),
    ({"model": "m", "pets": [{"kind": "cat", "lives": True}]}, ("pets", 0, "lives"), "type"),
    ({"model": "m", "pets": [{"kind": "dog"}]}, ("pets", 0, "good"), "missing"),
    ({"model": "m", "pets": [{"kind": "dog", "good": True, "lives": 1}]}, ("pets", 0, "lives"), "unknown"),
    ({"model": "m", "name": ""}, ("name",), "too_short"),
    ({"model": "m", "name": ["a", 1]}, ("name", 1), "type"),
    ({"model": "m", "name": 5}, ("name",), "type"),
    ({"model": "m", "tags": {"a": "long"}}, ("tags", "a"), "too_long"),
    ({"model": "m", "score": None}, ("score",), "type"),
    ({"model": "m", "score": -0.5}, ("score",), "below_min"),
    ({"model": "m", "extra_data": {"other": 1}}, ("extra_data", "id"), "missing"),
    ([1], (), "type"),
])
def test_the_first_broken_rule_and_where(data, path, kind) -> None:
    v = BODY.validate(data)
    assert v is not None and (v.path, v.kind) == (path, kind)


def test_valid_bodies_pass() -> None:
    for data in ({"model": "m"},
                 {"model": "m", "pets": [{"kind": "cat", "lives": 9}, {"kind": "dog", "good": False}],
                  "name": ["x"], "tags": {"a": "abc"}, "score": 1, "extra_data": {"id": 1, "more": [1]},
                  "anything": [{"x": None}]},
                 {"model": "m", "pets": None, "name": None}):  # optional fields may be null
        assert BODY.validate(data) is None
    assert BODY.model_key == "model"


def test_violation_names_its_param() -> None:
    v = Violation(("messages", 0, "content", 2, "image_url"), "missing")
    assert v.param == "messages[0].content[2].image_url"
    assert "messages[0].content[2].image_url" in v.message
    assert Violation((), "json").param is None
    enum = BODY.validate({"model": "m", "pets": [{"kind": "fish"}]})
    assert enum.expected == ("cat", "dog") and enum.got == "fish"
    below = BODY.validate({"model": "m", "score": -0.5})
    assert (below.rule, below.expected, below.got) == ("number", 0, -0.5)


def test_form_text_becomes_the_declared_type() -> None:
    form = Body(form=True, file=File(required=True), n=Int(), t=Num(), flag=Bool(),
                words=Array(Int()), note=Str())
    upload = Upload("a.wav", b"x")
    data = form.from_form_fields({"file": upload, "n": "3", "t": "0.5", "flag": "true",
                                  "words": ["1", "2"], "note": "7", "other": "x"})
    assert data == {"file": upload, "n": 3, "t": 0.5, "flag": True, "words": [1, 2], "note": "7",
                    "other": "x"}
    assert form.from_form_fields({"file": upload, "t": "nan"})["t"] == "nan"  # stays text: refused
    assert form.validate(form.from_form_fields({"file": upload, "n": "three"})).path == ("n",)
    assert form.validate({"file": "text"}).kind == "type"


def test_obj_extra_must_be_named() -> None:
    with pytest.raises(ValueError):
        Obj(extra="ignore")


# -- a service of another shape, over real HTTP ----------------------------------------------------------

class Toy(Service):
    """FastAPI-like: 422 ``{"detail": [...]}`` refusals, ``{"detail": "..."}`` errors."""

    name = "toy"
    models = ("toy-1",)
    routes = (
        Route("POST", r"/echo", "echo", Body(model=Model(required=True), n=Int(min=1))),
        Route("POST", r"/boom", "boom", Body(extra="allow")),
        Route("GET", r"/stream", "stream"),
        Route("GET", r"/public", "public", auth=False),
    )

    def read_key(self, req: Request) -> str | None:
        return req.headers.get("x-key")

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        return Reply(status, {"detail": message}, headers or {})

    def reject(self, violation: Violation) -> Reply:
        return Reply(422, {"detail": [{"loc": ["body", *violation.path], "msg": violation.message,
                                       "type": violation.kind}]})

    def unknown_model(self, model: str) -> Reply:
        return Reply(404, {"detail": f"no model {model}"})

    def stream_error_chunk(self) -> bytes:
        return b'data: {"error": "stream broke"}\n\n'

    def echo(self, req: Request) -> Reply:
        return Reply(200, req.data)

    def boom(self, req: Request) -> Reply:
        raise KeyError("oops")

    def stream(self, req: Request) -> Stream:
        def events() -> Iterator[bytes]:
            yield b"data: 1\n\n"
            raise RuntimeError("generator broke")

        return Stream(events())

    def public(self, req: Request) -> Reply:
        return Reply(200, {"root": req.root})


@pytest.fixture
def toy() -> Iterator[tuple[Toy, str]]:
    import threading

    service = Toy(ServiceConfig(keys=["k"]), seed=0)
    server = EmulatorServer(("127.0.0.1", 0), {"toy": service})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield service, f"http://127.0.0.1:{server.server_address[1]}/toy"
    server.shutdown()
    server.server_close()
    thread.join(5)


def _send(method: str, url: str, body: Any = None, key: str | None = "k") -> urllib3.BaseHTTPResponse:
    headers = {"x-key": key} if key else {}
    data = json.dumps(body).encode() if body is not None else None
    return urllib3.request(method, url, body=data, headers=headers, retries=False)


def test_a_service_picks_its_own_refusal_and_model_answer(toy) -> None:
    service, url = toy
    r = _send("POST", url + "/echo", {"model": "toy-1", "n": 0})
    assert r.status == 422
    assert json.loads(r.data)["detail"][0]["loc"] == ["body", "n"]
    r = _send("POST", url + "/echo", {"model": "toy-2"})
    assert (r.status, json.loads(r.data)) == (404, {"detail": "no model toy-2"})
    r = _send("POST", url + "/echo", {"model": "toy-1", "n": 2})
    assert (r.status, json.loads(r.data)) == (200, {"model": "toy-1", "n": 2})
    assert service.record.snapshot()["refused"] == {"n": 1}


def test_a_raising_handler_answers_the_services_500_and_is_recorded(toy) -> None:
    service, url = toy
    r = _send("POST", url + "/boom", {})
    assert r.status == 500 and "detail" in json.loads(r.data)
    (err,) = service.record.snapshot()["handler_errors"]
    assert err.startswith("KeyError: 'oops' at test_emulator_machinery.py:")
    assert _send("POST", url + "/echo", {"model": "toy-1"}).status == 200  # the server goes on


def test_a_raising_stream_ends_in_band(toy) -> None:
    service, url = toy
    r = _send("GET", url + "/stream")
    assert r.status == 200 and r.data == b'data: 1\n\ndata: {"error": "stream broke"}\n\n'
    assert service.record.snapshot()["handler_errors"][0].startswith("RuntimeError: generator broke")


def test_public_routes_need_no_key(toy) -> None:
    _, url = toy
    r = _send("GET", url + "/public", key=None)
    assert r.status == 200 and json.loads(r.data)["root"] == url
    assert _send("POST", url + "/echo", {"model": "toy-1"}, key=None).status == 401


def test_emulator_reports_handler_errors(monkeypatch) -> None:
    with Emulator() as emu:
        service = emu.services["openai"]
        monkeypatch.setattr(service, "_compiled", [
            (r, rx, (lambda req: 1 / 0) if r.handler == "list_models" else h)
            for r, rx, h in service._compiled])
        emu.assert_no_handler_errors()
        r = urllib3.request("GET", emu.base_url("openai") + "/models",
                            headers={"Authorization": "Bearer k"}, retries=False)
        assert r.status == 500 and json.loads(r.data)["error"]["type"] == "server_error"
        assert list(emu.handler_errors()) == ["openai"]
        with pytest.raises(AssertionError, match="ZeroDivisionError"):
            emu.assert_no_handler_errors()


@pytest.mark.parametrize("burst,allowed", [(60.0, 30), (1.0, 10), (0.5, 5)])
def test_a_keys_bucket_holds_burst_seconds_of_its_quota(burst, allowed) -> None:
    """rpm=600 is 10 a second: a fresh key may send a minute's worth at once (OpenAI's way,
    capped here by the 30 sent), or only ``burst`` seconds' worth."""
    from ipfs_accelerate_api.emulator import Emulator, ServiceConfig

    with Emulator({"openai": ServiceConfig(rpm=600, burst=burst)}) as e:
        url = e.base_url("openai") + "/embeddings"
        statuses = [urllib3.request("POST", url, json={"model": "text-embedding-3-small",
                                                       "input": "a"},
                                    headers={"authorization": "Bearer k"}, retries=False).status
                    for _ in range(30)]
    assert statuses[:allowed] == [200] * allowed
    if allowed < 30:  # then refused, but for what refilled while sending (10 a second)
        assert allowed <= statuses.count(200) <= allowed + 5 and statuses[-1] == 429
