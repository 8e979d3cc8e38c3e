"""Errors of the Client-Server API: one exception class per Matrix errcode, plus transport failures.

Owns the mapping from an HTTP error response to an exception (`error_from_response`). Rules:
- every class derives from `ApiError`, itself a `nimbus.types.errors.NimbusError`;
- a Matrix error keeps the server's HTTP status, `errcode`, `error` text (`.message`) and body;
- an errcode nimbus does not know becomes a plain `MatrixError` (never an exception of another kind);
- messages name the endpoint and the failure, never a secret: the transport scrubs the access token
  out of the server's text before it gets here, and request bodies are never quoted.

Spec: https://spec.matrix.org/v1.12/client-server-api/#standard-error-response (common and other
error codes), #rate-limiting, #soft-logout, #user-interactive-authentication-api.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from nimbus.types.errors import MalformedData, NimbusError

JSONDict = dict[str, Any]


class ApiError(NimbusError):
    """Any failure talking to a homeserver."""


class ServerUnreachable(ApiError):
    """No usable answer: connection refused, reset or closed before a response arrived."""


class RequestTimeout(ApiError):
    """The server accepted the request but did not answer in time."""


class MalformedResponse(ApiError, MalformedData):
    """The server's answer is not JSON, not an object, or has fields of the wrong type."""

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint}: {message}" if endpoint else message)


class MatrixError(ApiError):
    """An HTTP error answer from a homeserver (spec: "Standard error response").

    `errcode` is None when the body is not a Matrix error (e.g. an HTML page from a proxy);
    `message` is the server's `error` text; `body` the whole decoded body (or {}).
    """

    _registry: ClassVar[dict[str, type[MatrixError]]] = {}
    ERRCODE: ClassVar[str | None] = None

    def __init_subclass__(cls, errcode: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if errcode is not None:
            cls.ERRCODE = errcode
            MatrixError._registry[errcode] = cls

    def __init__(
        self,
        status: int,
        errcode: str | None,
        message: str,
        body: JSONDict | None = None,
        *,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.errcode = errcode
        self.message = message
        self.body: JSONDict = body if body is not None else {}
        self.endpoint = endpoint
        where = f"{endpoint}: " if endpoint else ""
        code = errcode or "no errcode"
        super().__init__(f"{where}{code} (HTTP {status}): {message or 'no message'}")


class ServerError(MatrixError):
    """A 5xx answer without a Matrix error body (the server or a proxy in front of it failed)."""


class AuthRequired(MatrixError):
    """401 with a user-interactive auth body (spec: "User-interactive authentication API").

    `flows` lists the stage sequences the server accepts, `session` must go back in the next
    attempt's auth dict, `completed` lists stages already done. `errcode` is set when a stage failed
    (e.g. M_FORBIDDEN for a wrong password).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        flows: list[tuple[str, ...]] = []
        raw_flows = self.body.get("flows")
        if isinstance(raw_flows, list):
            for flow in raw_flows:
                stages = flow.get("stages") if isinstance(flow, dict) else None
                if isinstance(stages, list) and all(isinstance(s, str) for s in stages):
                    flows.append(tuple(stages))
        self.flows: tuple[tuple[str, ...], ...] = tuple(flows)
        session = self.body.get("session")
        self.session: str | None = session if isinstance(session, str) else None
        completed = self.body.get("completed")
        self.completed: tuple[str, ...] = (
            tuple(s for s in completed if isinstance(s, str)) if isinstance(completed, list) else ()
        )
        params = self.body.get("params")
        self.params: JSONDict = params if isinstance(params, dict) else {}


# --- Common error codes (spec: #common-error-codes) ---------------------------------------------


class Forbidden(MatrixError, errcode="M_FORBIDDEN"):
    """Forbidden access, e.g. joining a room without permission, failed login."""


class UnknownToken(MatrixError, errcode="M_UNKNOWN_TOKEN"):
    """The access or refresh token was not recognised. `soft_logout`: see spec #soft-logout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.soft_logout: bool = self.body.get("soft_logout") is True


class MissingToken(MatrixError, errcode="M_MISSING_TOKEN"):
    """No access token was given for an endpoint that needs one."""


class UserLocked(MatrixError, errcode="M_USER_LOCKED"):
    """The account is locked (spec v1.8+: #account-locking)."""


class BadJson(MatrixError, errcode="M_BAD_JSON"):
    """The request body was JSON but malformed (e.g. missing a required key)."""


class NotJson(MatrixError, errcode="M_NOT_JSON"):
    """The request body was not valid JSON."""


class NotFound(MatrixError, errcode="M_NOT_FOUND"):
    """No resource was found for this request."""


class LimitExceeded(MatrixError, errcode="M_LIMIT_EXCEEDED"):
    """Rate limited (spec: #rate-limiting). `retry_after_ms` from Retry-After or the body, if given.

    Since v1.10 the `Retry-After` header (seconds) is preferred and `retry_after_ms` is deprecated;
    nimbus reads the header first and falls back to the body.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        headers = kwargs.get("headers") or {}
        self.retry_after_ms: int | None = _retry_after_header(headers)
        if self.retry_after_ms is None:
            value = self.body.get("retry_after_ms")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self.retry_after_ms = value


class Unknown(MatrixError, errcode="M_UNKNOWN"):
    """An unknown error has occurred."""


class Unrecognized(MatrixError, errcode="M_UNRECOGNIZED"):
    """The server does not understand the request (endpoint not implemented, wrong method)."""


# --- Other error codes (spec: #other-error-codes) -----------------------------------------------


class Unauthorized(MatrixError, errcode="M_UNAUTHORIZED"):
    """The request was not correctly authorized (usually a failed login)."""


class UserDeactivated(MatrixError, errcode="M_USER_DEACTIVATED"):
    """The user id belongs to a deactivated account."""


class UserInUse(MatrixError, errcode="M_USER_IN_USE"):
    """Registration: the user id is taken."""


class InvalidUsername(MatrixError, errcode="M_INVALID_USERNAME"):
    """Registration: the user id is not valid."""


class RoomInUse(MatrixError, errcode="M_ROOM_IN_USE"):
    """createRoom: the room alias is taken."""


class InvalidRoomState(MatrixError, errcode="M_INVALID_ROOM_STATE"):
    """createRoom: the initial state is invalid."""


class ThreepidInUse(MatrixError, errcode="M_THREEPID_IN_USE"):
    """The third-party identifier is already in use by another user."""


class ThreepidNotFound(MatrixError, errcode="M_THREEPID_NOT_FOUND"):
    """No account matches the third-party identifier."""


class ThreepidAuthFailed(MatrixError, errcode="M_THREEPID_AUTH_FAILED"):
    """Third-party identifier authentication failed."""


class ThreepidDenied(MatrixError, errcode="M_THREEPID_DENIED"):
    """The server does not accept this third-party identifier."""


class ThreepidMediumNotSupported(MatrixError, errcode="M_THREEPID_MEDIUM_NOT_SUPPORTED"):
    """The homeserver does not support adding a third-party identifier of this medium."""


class ServerNotTrusted(MatrixError, errcode="M_SERVER_NOT_TRUSTED"):
    """The client's request used a third-party server (e.g. identity server) this server distrusts."""


class UnsupportedRoomVersion(MatrixError, errcode="M_UNSUPPORTED_ROOM_VERSION"):
    """createRoom/upgrade: the server does not support the room version."""


class IncompatibleRoomVersion(MatrixError, errcode="M_INCOMPATIBLE_ROOM_VERSION"):
    """join: the server does not support the room's version. `room_version` if the server said."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = self.body.get("room_version")
        self.room_version: str | None = version if isinstance(version, str) else None


class BadState(MatrixError, errcode="M_BAD_STATE"):
    """The state change requested cannot be performed (e.g. unbanning a user who is not banned)."""


class GuestAccessForbidden(MatrixError, errcode="M_GUEST_ACCESS_FORBIDDEN"):
    """The room or resource does not permit guests."""


class CaptchaNeeded(MatrixError, errcode="M_CAPTCHA_NEEDED"):
    """A Captcha is required to complete the request."""


class CaptchaInvalid(MatrixError, errcode="M_CAPTCHA_INVALID"):
    """The Captcha response was wrong."""


class MissingParam(MatrixError, errcode="M_MISSING_PARAM"):
    """A required parameter was missing."""


class InvalidParam(MatrixError, errcode="M_INVALID_PARAM"):
    """A parameter has an invalid value."""


class TooLarge(MatrixError, errcode="M_TOO_LARGE"):
    """The request or entity was too large."""


class Exclusive(MatrixError, errcode="M_EXCLUSIVE"):
    """The resource is reserved by an application service."""


class ResourceLimitExceeded(MatrixError, errcode="M_RESOURCE_LIMIT_EXCEEDED"):
    """The homeserver hit a resource limit (e.g. monthly active users). `admin_contact` if given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        contact = self.body.get("admin_contact")
        self.admin_contact: str | None = contact if isinstance(contact, str) else None


class CannotLeaveServerNoticeRoom(MatrixError, errcode="M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"):
    """The user cannot leave the server notices room."""


class WeakPassword(MatrixError, errcode="M_WEAK_PASSWORD"):
    """The password does not meet the server's policy."""


class UnableToAuthoriseJoin(MatrixError, errcode="M_UNABLE_TO_AUTHORISE_JOIN"):
    """Restricted join: the server cannot check the join rules' conditions."""


class UnableToGrantJoin(MatrixError, errcode="M_UNABLE_TO_GRANT_JOIN"):
    """Restricted join: no resident server can issue the join; try another `via`."""


class BadAlias(MatrixError, errcode="M_BAD_ALIAS"):
    """m.room.canonical_alias names an alias that does not point at this room."""


class DuplicateAnnotation(MatrixError, errcode="M_DUPLICATE_ANNOTATION"):
    """The same annotation (reaction) was already sent by this user."""


class NotYetUploaded(MatrixError, errcode="M_NOT_YET_UPLOADED"):
    """Asynchronous upload: the media id exists but its content has not been uploaded yet."""


class CannotOverwriteMedia(MatrixError, errcode="M_CANNOT_OVERWRITE_MEDIA"):
    """Asynchronous upload: the media id already has content."""


class WrongRoomKeysVersion(MatrixError, errcode="M_WRONG_ROOM_KEYS_VERSION"):
    """Key backup: the given backup version is not the current one. `current_version` if given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = self.body.get("current_version")
        self.current_version: str | None = version if isinstance(version, str) else None


class UnknownPos(MatrixError, errcode="M_UNKNOWN_POS"):
    """Sliding sync: the `pos` is no longer known to the server; start again."""


def error_class(errcode: str | None) -> type[MatrixError]:
    """The exception class for an errcode: its own subclass, or MatrixError for unknown codes."""
    if errcode is None:
        return MatrixError
    return MatrixError._registry.get(errcode, MatrixError)


def known_errcodes() -> dict[str, type[MatrixError]]:
    """Every errcode with its own class (a copy)."""
    return dict(MatrixError._registry)


def error_from_response(
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    endpoint: str | None = None,
) -> MatrixError:
    """The exception for an HTTP error answer. `body` is the decoded JSON (anything, or None).

    - 401 whose body has `flows` or `session` → AuthRequired (user-interactive auth);
    - a body with a string `errcode` → that code's class (unknown codes → MatrixError);
    - 5xx without a Matrix body → ServerError; other statuses without one → MatrixError(errcode=None).
    """
    obj: JSONDict = body if isinstance(body, dict) else {}
    errcode = obj.get("errcode")
    errcode = errcode if isinstance(errcode, str) else None
    text = obj.get("error")
    message = text if isinstance(text, str) else ""
    hdrs = headers or {}
    if status == 401 and ("flows" in obj or "session" in obj):
        return AuthRequired(
            status, errcode, message or "authentication required", obj, endpoint=endpoint, headers=hdrs
        )
    if errcode is None:
        cls: type[MatrixError] = ServerError if status >= 500 else MatrixError
        return cls(
            status,
            None,
            message or f"HTTP {status} without a Matrix error body",
            obj,
            endpoint=endpoint,
            headers=hdrs,
        )
    return error_class(errcode)(status, errcode, message, obj, endpoint=endpoint, headers=hdrs)


def _retry_after_header(headers: Mapping[str, str]) -> int | None:
    """`Retry-After: <seconds>` in milliseconds (HTTP-date forms are ignored: no clock here)."""
    value = None
    for key, val in headers.items():
        if key.lower() == "retry-after":
            value = val
            break
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return int(seconds * 1000)
