"""Unit tests of shared-secret registration against httpx.MockTransport (no network)."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from nimbus.homeserver.admin import REGISTER_PATH, register_user, registration_mac
from nimbus.homeserver.errors import RegistrationFailed

SECRET = "s3cret-shared"


def test_mac_matches_synapse_definition() -> None:
    expected = hmac.new(SECRET.encode(), b"abc\x00alice\x00pw\x00notadmin", hashlib.sha1).hexdigest()
    assert registration_mac(SECRET, "abc", "alice", "pw", admin=False) == expected
    assert registration_mac(SECRET, "abc", "alice", "pw", admin=True) != expected


def fake_synapse(seen: list[dict[str, object]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == REGISTER_PATH
        if request.method == "GET":
            return httpx.Response(200, json={"nonce": "n0nce"})
        body = json.loads(request.content)
        seen.append(body)
        mac = registration_mac(SECRET, "n0nce", body["username"], body["password"], bool(body["admin"]))
        if body["mac"] != mac:
            return httpx.Response(403, json={"errcode": "M_FORBIDDEN", "error": "HMAC incorrect"})
        if body["username"] == "taken":
            return httpx.Response(400, json={"errcode": "M_USER_IN_USE", "error": "User ID already taken."})
        return httpx.Response(
            200,
            json={"user_id": f"@{body['username']}:hs", "access_token": "tok", "device_id": "DEV"},
        )

    return httpx.MockTransport(handler)


def test_register_returns_ids_and_token() -> None:
    seen: list[dict[str, object]] = []
    user = register_user("http://hs", SECRET, "alice", "pw", admin=True, transport=fake_synapse(seen))
    assert (user.user_id, user.access_token, user.device_id) == ("@alice:hs", "tok", "DEV")
    assert seen[0]["admin"] is True and seen[0]["nonce"] == "n0nce"
    assert "tok" not in repr(user) and "pw" not in repr(user)


def test_wrong_secret_is_refused_without_leaking_it() -> None:
    with pytest.raises(RegistrationFailed) as e:
        register_user("http://hs", "wrong-secret", "bob", "pw", transport=fake_synapse([]))
    assert e.value.status == 403 and e.value.errcode == "M_FORBIDDEN"
    assert "wrong-secret" not in str(e.value)


def test_taken_user_reports_errcode() -> None:
    with pytest.raises(RegistrationFailed, match="M_USER_IN_USE"):
        register_user("http://hs", SECRET, "taken", "pw", transport=fake_synapse([]))


def test_unreachable_server_is_a_registration_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RegistrationFailed, match="cannot reach"):
        register_user("http://hs", SECRET, "x", "pw", transport=httpx.MockTransport(refuse))
