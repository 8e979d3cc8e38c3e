"""User-interactive auth flows, driven by hand (no transport)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from nimbus.api import devices
from nimbus.api.errors import AuthRequired, error_from_response
from nimbus.api.uia import UiaResult, interactive, with_password_auth

FLOWS = {"flows": [{"stages": ["m.login.password"]}], "session": "sess-1", "params": {}}


def uia_error(body: dict[str, Any]) -> AuthRequired:
    exc = error_from_response(401, body, {})
    assert isinstance(exc, AuthRequired)
    return exc


def test_success_without_auth_returns_body() -> None:
    flow = with_password_auth(functools.partial(devices.delete_device, "DEV"), "@a:x", "pw")
    first = next(flow)
    assert first.json == {}
    with pytest.raises(StopIteration) as stop:
        flow.send(UiaResult(body={"ok": 1}))
    assert stop.value.value == {"ok": 1}


def test_401_then_retry_with_password_and_session() -> None:
    flow = with_password_auth(functools.partial(devices.delete_device, "DEV"), "@a:x", "pw")
    next(flow)
    second = flow.send(UiaResult(auth_required=uia_error(FLOWS)))
    assert (second.method, second.path) == ("DELETE", "/_matrix/client/v3/devices/DEV")
    assert second.json == {
        "auth": {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "@a:x"},
            "password": "pw",
            "session": "sess-1",
        }
    }
    with pytest.raises(StopIteration) as stop:
        flow.send(UiaResult(body={}))
    assert stop.value.value == {}


def test_wrong_password_raises_the_servers_error() -> None:
    flow = with_password_auth(functools.partial(devices.delete_device, "DEV"), "@a:x", "bad")
    next(flow)
    flow.send(UiaResult(auth_required=uia_error(FLOWS)))
    refused = uia_error({**FLOWS, "errcode": "M_FORBIDDEN", "error": "Invalid password"})
    with pytest.raises(AuthRequired) as info:
        flow.send(UiaResult(auth_required=refused))
    assert info.value.errcode == "M_FORBIDDEN"


def test_no_password_flow_gives_up() -> None:
    flow = with_password_auth(functools.partial(devices.delete_device, "DEV"), "@a:x", "pw")
    next(flow)
    only_sso = uia_error({"flows": [{"stages": ["m.login.sso"]}], "session": "s"})
    with pytest.raises(AuthRequired) as info:
        flow.send(UiaResult(auth_required=only_sso))
    assert info.value.flows == (("m.login.sso",),)


def test_custom_chooser_is_bounded() -> None:
    flow = interactive(
        functools.partial(devices.delete_device, "DEV"), lambda s: {"type": "m.login.dummy"}, max_rounds=2
    )
    next(flow)
    flow.send(UiaResult(auth_required=uia_error(FLOWS)))
    flow.send(UiaResult(auth_required=uia_error(FLOWS)))
    with pytest.raises(AuthRequired):
        flow.send(UiaResult(auth_required=uia_error(FLOWS)))
