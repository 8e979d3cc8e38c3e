"""errcode → exception class mapping, special fields, and messages."""

from __future__ import annotations

import pytest

from nimbus.api import errors as e
from nimbus.types.errors import MalformedData, NimbusError

SPEC_ERRCODES = [
    ("M_FORBIDDEN", e.Forbidden, 403),
    ("M_UNKNOWN_TOKEN", e.UnknownToken, 401),
    ("M_MISSING_TOKEN", e.MissingToken, 401),
    ("M_USER_LOCKED", e.UserLocked, 401),
    ("M_BAD_JSON", e.BadJson, 400),
    ("M_NOT_JSON", e.NotJson, 400),
    ("M_NOT_FOUND", e.NotFound, 404),
    ("M_LIMIT_EXCEEDED", e.LimitExceeded, 429),
    ("M_UNKNOWN", e.Unknown, 500),
    ("M_UNRECOGNIZED", e.Unrecognized, 404),
    ("M_UNAUTHORIZED", e.Unauthorized, 401),
    ("M_USER_DEACTIVATED", e.UserDeactivated, 403),
    ("M_USER_IN_USE", e.UserInUse, 400),
    ("M_INVALID_USERNAME", e.InvalidUsername, 400),
    ("M_ROOM_IN_USE", e.RoomInUse, 400),
    ("M_INVALID_ROOM_STATE", e.InvalidRoomState, 400),
    ("M_THREEPID_IN_USE", e.ThreepidInUse, 400),
    ("M_THREEPID_NOT_FOUND", e.ThreepidNotFound, 400),
    ("M_THREEPID_AUTH_FAILED", e.ThreepidAuthFailed, 401),
    ("M_THREEPID_DENIED", e.ThreepidDenied, 403),
    ("M_THREEPID_MEDIUM_NOT_SUPPORTED", e.ThreepidMediumNotSupported, 400),
    ("M_SERVER_NOT_TRUSTED", e.ServerNotTrusted, 403),
    ("M_UNSUPPORTED_ROOM_VERSION", e.UnsupportedRoomVersion, 400),
    ("M_INCOMPATIBLE_ROOM_VERSION", e.IncompatibleRoomVersion, 400),
    ("M_BAD_STATE", e.BadState, 400),
    ("M_GUEST_ACCESS_FORBIDDEN", e.GuestAccessForbidden, 403),
    ("M_CAPTCHA_NEEDED", e.CaptchaNeeded, 401),
    ("M_CAPTCHA_INVALID", e.CaptchaInvalid, 401),
    ("M_MISSING_PARAM", e.MissingParam, 400),
    ("M_INVALID_PARAM", e.InvalidParam, 400),
    ("M_TOO_LARGE", e.TooLarge, 413),
    ("M_EXCLUSIVE", e.Exclusive, 400),
    ("M_RESOURCE_LIMIT_EXCEEDED", e.ResourceLimitExceeded, 403),
    ("M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", e.CannotLeaveServerNoticeRoom, 403),
    ("M_WEAK_PASSWORD", e.WeakPassword, 400),
    ("M_UNABLE_TO_AUTHORISE_JOIN", e.UnableToAuthoriseJoin, 400),
    ("M_UNABLE_TO_GRANT_JOIN", e.UnableToGrantJoin, 502),
    ("M_BAD_ALIAS", e.BadAlias, 400),
    ("M_DUPLICATE_ANNOTATION", e.DuplicateAnnotation, 400),
    ("M_NOT_YET_UPLOADED", e.NotYetUploaded, 504),
    ("M_CANNOT_OVERWRITE_MEDIA", e.CannotOverwriteMedia, 409),
    ("M_WRONG_ROOM_KEYS_VERSION", e.WrongRoomKeysVersion, 403),
    ("M_UNKNOWN_POS", e.UnknownPos, 400),
]


@pytest.mark.parametrize(("errcode", "cls", "status"), SPEC_ERRCODES)
def test_each_errcode_maps_to_its_class_and_keeps_the_message(
    errcode: str, cls: type[e.MatrixError], status: int
) -> None:
    body = {"errcode": errcode, "error": f"server says {errcode.lower()}"}
    exc = e.error_from_response(status, body, {}, endpoint="GET /_matrix/client/v3/x")
    assert type(exc) is cls
    assert isinstance(exc, e.MatrixError) and isinstance(exc, e.ApiError) and isinstance(exc, NimbusError)
    assert exc.status == status
    assert exc.errcode == errcode
    assert exc.message == f"server says {errcode.lower()}"
    assert exc.body == body
    assert errcode in str(exc) and exc.message in str(exc) and "/_matrix/client/v3/x" in str(exc)


def test_every_registered_class_is_in_the_table() -> None:
    assert set(e.known_errcodes()) == {code for code, _, _ in SPEC_ERRCODES}


def test_unknown_errcode_is_plain_matrix_error() -> None:
    exc = e.error_from_response(400, {"errcode": "ORG.EXAMPLE.CUSTOM", "error": "nope"}, {})
    assert type(exc) is e.MatrixError
    assert exc.errcode == "ORG.EXAMPLE.CUSTOM" and exc.message == "nope"


def test_unknown_token_soft_logout() -> None:
    soft = e.error_from_response(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "x", "soft_logout": True})
    hard = e.error_from_response(401, {"errcode": "M_UNKNOWN_TOKEN", "error": "x"})
    assert isinstance(soft, e.UnknownToken) and soft.soft_logout is True
    assert isinstance(hard, e.UnknownToken) and hard.soft_logout is False


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"retry_after_ms": 1500}, {}, 1500),
        ({}, {"Retry-After": "3"}, 3000),
        ({"retry_after_ms": 1500}, {"retry-after": "2"}, 2000),  # the header wins (spec v1.10+)
        ({"retry_after_ms": "soon"}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"retry_after_ms": True}, {}, None),
        ({"retry_after_ms": -5}, {"Retry-After": "-1"}, None),
    ],
)
def test_limit_exceeded_retry_after(
    body: dict[str, object], headers: dict[str, str], expected: int | None
) -> None:
    exc = e.error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", **body}, headers)
    assert isinstance(exc, e.LimitExceeded)
    assert exc.retry_after_ms == expected


def test_extra_fields_of_some_codes() -> None:
    inc = e.error_from_response(400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "room_version": "11"})
    assert isinstance(inc, e.IncompatibleRoomVersion) and inc.room_version == "11"
    res = e.error_from_response(403, {"errcode": "M_RESOURCE_LIMIT_EXCEEDED", "admin_contact": "mailto:a@b"})
    assert isinstance(res, e.ResourceLimitExceeded) and res.admin_contact == "mailto:a@b"
    wrong = e.error_from_response(403, {"errcode": "M_WRONG_ROOM_KEYS_VERSION", "current_version": "3"})
    assert isinstance(wrong, e.WrongRoomKeysVersion) and wrong.current_version == "3"


def test_uia_401_is_auth_required_with_flows() -> None:
    body = {
        "flows": [{"stages": ["m.login.password"]}, {"stages": ["m.login.recaptcha", "m.login.dummy"]}],
        "session": "sess1",
        "completed": [],
        "params": {"m.login.recaptcha": {"public_key": "k"}},
    }
    exc = e.error_from_response(401, body, {})
    assert isinstance(exc, e.AuthRequired)
    assert exc.flows == (("m.login.password",), ("m.login.recaptcha", "m.login.dummy"))
    assert exc.session == "sess1" and exc.completed == () and exc.errcode is None
    assert exc.params == {"m.login.recaptcha": {"public_key": "k"}}


def test_uia_401_with_failed_stage_keeps_errcode() -> None:
    body = {"errcode": "M_FORBIDDEN", "error": "Invalid password", "flows": [], "session": "s"}
    exc = e.error_from_response(401, body, {})
    assert isinstance(exc, e.AuthRequired) and exc.errcode == "M_FORBIDDEN"
    assert exc.message == "Invalid password"


def test_401_without_uia_fields_is_the_errcode_class() -> None:
    assert type(e.error_from_response(401, {"errcode": "M_MISSING_TOKEN"})) is e.MissingToken


@pytest.mark.parametrize("body", [None, "<html>Bad Gateway</html>", ["x"], {"error": 5}])
def test_5xx_without_matrix_body_is_server_error(body: object) -> None:
    exc = e.error_from_response(502, body, {})
    assert type(exc) is e.ServerError and exc.errcode is None and exc.status == 502
    assert "502" in str(exc)


def test_4xx_without_matrix_body_is_plain_matrix_error() -> None:
    exc = e.error_from_response(404, None, {})
    assert type(exc) is e.MatrixError and exc.errcode is None


def test_malformed_response_is_both_api_error_and_malformed_data() -> None:
    exc = e.MalformedResponse("'next_batch' missing", "GET /_matrix/client/v3/sync")
    assert isinstance(exc, e.ApiError) and isinstance(exc, MalformedData)
    assert str(exc) == "GET /_matrix/client/v3/sync: 'next_batch' missing"
