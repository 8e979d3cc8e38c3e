"""Transport over httpx.MockTransport: auth header, retries, error mapping, UIA driving."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from nimbus.api import devices, media, room_events, room_state, sync
from nimbus.api.errors import (
    AuthRequired,
    Forbidden,
    LimitExceeded,
    MalformedResponse,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    UnknownToken,
)
from nimbus.api.request import Request
from nimbus.api.uia import with_password_auth
from nimbus.client.transport import RetryInfo, Transport

TOKEN = "syt_c2VjcmV0_TOKENVALUE_123"
BASE = "https://hs.example.org"
ROOM = "!abc:example.org"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A scripted server: each call pops the next responder; records requests and sleeps."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.retries: list[RetryInfo] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return step(request)  # type: ignore[no-any-return]
        return step  # type: ignore[no-any-return]

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def transport(self, **kwargs: Any) -> Transport:
        kwargs.setdefault("access_token", TOKEN)
        return Transport(
            BASE,
            transport=httpx.MockTransport(self),
            sleep=self.sleep,
            on_retry=self.retries.append,
            **kwargs,
        )


def ok(body: Any = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={} if body is None else body)


def err(status: int, errcode: str | None = None, error: str = "", **extra: Any) -> httpx.Response:
    if errcode is None:
        return httpx.Response(status, text="<html>upstream failure</html>")
    return httpx.Response(status, json={"errcode": errcode, "error": error, **extra})


GET = Request("GET", "/_matrix/client/v3/account/whoami")
POST = Request("POST", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/invite", json={"user_id": "@b:x"})


async def test_auth_header_encoded_path_query_and_json_body() -> None:
    server = Recorder(ok({"event_id": "$e"}), ok({"user_id": "@a:x"}))
    async with server.transport() as t:
        body = await t.send(room_events.send_event(ROOM, "m.room.message", {"body": "hi"}, "txn1"))
        await t.send(Request("GET", "/_matrix/client/versions", auth=False))
    assert body == {"event_id": "$e"}
    sent = server.requests[0]
    assert sent.method == "PUT"
    assert sent.url.raw_path == b"/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/txn1"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.content) == {"body": "hi"}
    assert TOKEN not in str(sent.url)
    assert "Authorization" not in server.requests[1].headers


async def test_repeated_query_values_and_token_setter() -> None:
    server = Recorder(ok({"room_id": ROOM}))
    t = server.transport(access_token=None)
    t.access_token = "new-token"
    from nimbus.api import rooms

    await t.send(rooms.join("#r:x", via=["a.org", "b.org"]))
    await t.aclose()
    sent = server.requests[0]
    assert sent.url.params.get_list("via") == ["a.org", "b.org"]
    assert sent.headers["Authorization"] == "Bearer new-token"
    assert TOKEN not in repr(t)


async def test_sync_uses_long_read_timeout() -> None:
    server = Recorder(ok({"next_batch": "n"}))
    async with server.transport(timeout=5.0) as t:
        await t.send(sync.sync(timeout_ms=30_000))
    timeout = server.requests[0].extensions["timeout"]
    assert timeout["read"] == pytest.approx(30 + sync.SYNC_TIMEOUT_MARGIN)
    assert timeout["connect"] == 5.0


async def test_429_waits_retry_after_ms_then_succeeds() -> None:
    server = Recorder(err(429, "M_LIMIT_EXCEEDED", "Too many", retry_after_ms=1500), ok({"ok": True}))
    async with server.transport() as t:
        assert await t.send(POST) == {"ok": True}  # a POST is retried on 429: the server refused it
    assert server.sleeps == [1.5]
    assert len(server.requests) == 2
    assert server.retries[0].attempt == 1 and "429" in server.retries[0].reason


async def test_429_retry_after_header() -> None:
    server = Recorder(
        httpx.Response(429, headers={"Retry-After": "2"}, json={"errcode": "M_LIMIT_EXCEEDED"}), ok()
    )
    async with server.transport() as t:
        await t.send(GET)
    assert server.sleeps == [2.0]


async def test_429_exhausting_retries_raises_limit_exceeded() -> None:
    server = Recorder(*[err(429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=100)] * 3)
    async with server.transport(max_retries=2) as t:
        with pytest.raises(LimitExceeded) as info:
            await t.send(GET)
    assert info.value.retry_after_ms == 100 and info.value.message == "Too many requests"
    assert len(server.requests) == 3 and server.sleeps == [0.1, 0.1]


async def test_429_asking_for_too_long_raises_at_once() -> None:
    server = Recorder(err(429, "M_LIMIT_EXCEEDED", retry_after_ms=3_600_000))
    async with server.transport(max_retry_after=60) as t:
        with pytest.raises(LimitExceeded):
            await t.send(GET)
    assert server.sleeps == [] and len(server.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_on_get_retried_then_server_error(status: int) -> None:
    server = Recorder(*[err(status)] * 5)
    async with server.transport(max_retries=4, backoff_base=0.5, backoff_max=3.0) as t:
        with pytest.raises(ServerError) as info:
            await t.send(GET)
    assert info.value.status == status and len(server.requests) == 5
    # exponential with jitter: each wait within [ceiling/2, ceiling], ceiling = min(max, base * 2**n)
    for n, delay in enumerate(server.sleeps):
        ceiling = min(3.0, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling


async def test_502_then_success_on_get() -> None:
    server = Recorder(err(502), ok({"user_id": "@a:x"}))
    async with server.transport() as t:
        assert await t.send(GET) == {"user_id": "@a:x"}
    assert len(server.sleeps) == 1


async def test_5xx_on_post_not_retried() -> None:
    server = Recorder(err(502))
    async with server.transport() as t:
        with pytest.raises(ServerError):
            await t.send(POST)
    assert len(server.requests) == 1


async def test_matrix_5xx_without_retry_status_not_retried() -> None:
    server = Recorder(err(500, "M_UNKNOWN", "Internal error"))
    async with server.transport() as t:
        with pytest.raises(Exception) as info:
            await t.send(GET)
    assert getattr(info.value, "errcode", None) == "M_UNKNOWN" and len(server.requests) == 1


async def test_post_not_retried_on_read_error() -> None:
    server = Recorder(httpx.ReadError("boom"), ok())
    async with server.transport() as t:
        with pytest.raises(ServerUnreachable):
            await t.send(POST)
    assert len(server.requests) == 1


async def test_post_retried_on_connect_error() -> None:
    server = Recorder(httpx.ConnectError("refused"), httpx.ConnectError("refused"), ok({"done": 1}))
    async with server.transport() as t:
        assert await t.send(POST) == {"done": 1}
    assert len(server.requests) == 3 and len(server.sleeps) == 2


async def test_connect_error_exhausted_is_server_unreachable() -> None:
    server = Recorder(*[httpx.ConnectError("refused")] * 3)
    async with server.transport(max_retries=2) as t:
        with pytest.raises(ServerUnreachable, match="cannot connect"):
            await t.send(GET)


@pytest.mark.parametrize("exc", [httpx.RemoteProtocolError("closed"), httpx.ReadError("reset")])
async def test_closed_connection_is_server_unreachable(exc: Exception) -> None:
    server = Recorder(*[exc] * 5)
    async with server.transport() as t:
        with pytest.raises(ServerUnreachable):
            await t.send(GET)
    assert len(server.requests) == 5  # GET is retry-safe: retried, then given up


async def test_closed_connection_then_success_on_get() -> None:
    server = Recorder(httpx.RemoteProtocolError("closed"), ok({"x": 1}))
    async with server.transport() as t:
        assert await t.send(GET) == {"x": 1}


async def test_server_that_never_answers_is_request_timeout() -> None:
    server = Recorder(*[httpx.ReadTimeout("slow")] * 5)
    async with server.transport() as t:
        with pytest.raises(RequestTimeout):
            await t.send(GET)
    assert len(server.requests) == 5
    server = Recorder(httpx.ReadTimeout("slow"))
    async with server.transport() as t:
        with pytest.raises(RequestTimeout):
            await t.send(POST)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="not json {"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json="str"),
        httpx.Response(200, content=b"\xff\xfe"),
    ],
)
async def test_non_object_answers_are_malformed(response: httpx.Response) -> None:
    server = Recorder(response)
    async with server.transport() as t:
        with pytest.raises(MalformedResponse) as info:
            await t.send(Request("GET", "/_matrix/client/v3/sync", query={"since": "tok"}))
    assert "/_matrix/client/v3/sync" in str(info.value) and "tok" not in str(info.value)


async def test_wrong_field_types_are_malformed_via_parser() -> None:
    server = Recorder(ok({"next_batch": 12}))
    async with server.transport() as t:
        body = await t.send(sync.sync())
    with pytest.raises(MalformedResponse):
        sync.parse_sync(body)


async def test_send_json_accepts_array_for_room_state() -> None:
    server = Recorder(
        ok(
            [
                {
                    "event_id": "$1",
                    "type": "m.room.create",
                    "sender": "@a:x",
                    "state_key": "",
                    "origin_server_ts": 1,
                    "content": {},
                    "room_id": ROOM,
                }
            ]
        )
    )
    async with server.transport() as t:
        events, skipped = room_state.parse_room_state(await t.send_json(room_state.room_state(ROOM)), ROOM)
    assert [e.event_id for e in events] == ["$1"] and skipped == 0


async def test_send_bytes_for_media() -> None:
    server = Recorder(
        httpx.Response(200, content=b"\x89PNGdata", headers={"Content-Type": "image/png"}),
        ok({"content_uri": "mxc://x/abc"}),
    )
    async with server.transport() as t:
        data, ctype = await t.send_bytes(media.download("mxc://x/abc"))
        uploaded = await t.send(media.upload(b"raw", "image/png", "a.png"))
    assert (data, ctype) == (b"\x89PNGdata", "image/png")
    assert server.requests[0].url.raw_path == b"/_matrix/client/v1/media/download/x/abc"
    up = server.requests[1]
    assert up.content == b"raw" and up.headers["Content-Type"] == "image/png"
    assert up.url.params["filename"] == "a.png" and uploaded == {"content_uri": "mxc://x/abc"}


async def test_matrix_errors_keep_message_and_never_contain_token() -> None:
    server = Recorder(
        err(403, "M_FORBIDDEN", f"You are not invited (token {TOKEN})"),
        err(401, "M_UNKNOWN_TOKEN", "Invalid access token", soft_logout=True),
    )
    async with server.transport() as t:
        with pytest.raises(Forbidden) as forbidden:
            await t.send(POST)
        with pytest.raises(UnknownToken) as unknown:
            await t.send(GET)
    assert forbidden.value.message.startswith("You are not invited")
    assert unknown.value.soft_logout is True
    for exc in (forbidden.value, unknown.value):
        assert TOKEN not in str(exc) and TOKEN not in repr(exc) and TOKEN not in json.dumps(exc.body)
        assert TOKEN not in exc.message


async def test_transport_errors_never_contain_token() -> None:
    server = Recorder(httpx.ConnectError(f"refused {TOKEN}"), httpx.ReadTimeout(f"slow {TOKEN}"))
    async with server.transport(max_retries=0) as t:
        with pytest.raises(ServerUnreachable) as unreachable:
            await t.send(GET)
        with pytest.raises(RequestTimeout) as timeout:
            await t.send(POST)
    for exc in (unreachable.value, timeout.value):
        assert TOKEN not in str(exc) and exc.__cause__ is None


async def test_uia_drive_retries_with_session() -> None:
    flows = {"flows": [{"stages": ["m.login.password"]}], "session": "sess-9", "params": {}}
    server = Recorder(httpx.Response(401, json=flows), ok({}))
    async with server.transport() as t:
        result = await t.drive(
            with_password_auth(functools.partial(devices.delete_device, "DEV"), "@a:x", "pw")
        )
    assert result == {}
    first, second = (json.loads(r.content) for r in server.requests)
    assert first == {}
    assert second["auth"]["session"] == "sess-9" and second["auth"]["type"] == "m.login.password"
    assert all(r.method == "DELETE" for r in server.requests)


async def test_uia_drive_wrong_password_raises_auth_required() -> None:
    flows = {"flows": [{"stages": ["m.login.password"]}], "session": "s"}
    server = Recorder(
        httpx.Response(401, json=flows),
        httpx.Response(401, json={**flows, "errcode": "M_FORBIDDEN", "error": "Invalid password"}),
    )
    async with server.transport() as t:
        with pytest.raises(AuthRequired) as info:
            await t.drive(with_password_auth(functools.partial(devices.delete_device, "D"), "@a:x", "bad"))
    assert info.value.errcode == "M_FORBIDDEN" and len(server.requests) == 2


async def test_uia_drive_other_error_propagates() -> None:
    server = Recorder(err(404, "M_NOT_FOUND", "Unknown device"))
    async with server.transport() as t:
        with pytest.raises(Exception) as info:
            await t.drive(with_password_auth(functools.partial(devices.delete_device, "D"), "@a:x", "pw"))
    assert getattr(info.value, "errcode", None) == "M_NOT_FOUND"
