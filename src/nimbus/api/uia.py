"""User-interactive authentication as sans-I/O generators (`result = yield request`).

Spec: https://spec.matrix.org/v1.12/client-server-api/#user-interactive-authentication-api.
A flow is a generator that yields `Request`s and receives a `UiaResult` for each: the success body,
or the `AuthRequired` error of a 401 UIA answer. Its return value is the final success body. Any other
error is raised by whoever drives it (`nimbus.client.transport.Transport.drive`), which closes the
generator. Nothing here touches the network, so flows are tested by sending results in by hand.

Design after httpx's auth flows (httpx/_auth.py): one generator per multi-step exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from nimbus.api.auth import password_identifier
from nimbus.api.errors import AuthRequired
from nimbus.api.request import Request

JSONDict = dict[str, Any]
RequestBuilder = Callable[[JSONDict | None], Request]
"""Builds the request, given the `auth` dict to include (None for the first, unauthenticated try)."""
StageChooser = Callable[[AuthRequired], JSONDict | None]
"""Given the server's UIA state, the next auth dict to send (with `session`), or None to give up."""
UiaFlow = Generator[Request, "UiaResult", JSONDict]

PASSWORD = "m.login.password"
DUMMY = "m.login.dummy"


@dataclass(frozen=True)
class UiaResult:
    """What the driver sends back for one request: exactly one of `body` and `auth_required`."""

    body: JSONDict | None = None
    auth_required: AuthRequired | None = None


def interactive(request_builder: RequestBuilder, choose: StageChooser, max_rounds: int = 5) -> UiaFlow:
    """Send without auth, then, while the server answers 401 UIA, send what `choose` gives.

    Raises the last AuthRequired when `choose` gives up or after `max_rounds` authenticated tries.
    """
    result = yield request_builder(None)
    for _ in range(max_rounds):
        if result.body is not None:
            return result.body
        assert result.auth_required is not None
        auth = choose(result.auth_required)
        if auth is None:
            raise result.auth_required
        result = yield request_builder(auth)
    if result.body is not None:
        return result.body
    assert result.auth_required is not None
    raise result.auth_required


def _password_chooser(user_id: str, password: str) -> StageChooser:
    def choose(state: AuthRequired) -> JSONDict | None:
        if state.errcode is not None:
            return None  # a stage we sent failed (e.g. M_FORBIDDEN: wrong password): do not loop
        for flow in state.flows:
            remaining = [s for s in flow if s not in state.completed]
            if not remaining:
                continue
            stage = remaining[0]
            if stage == PASSWORD and all(s in (PASSWORD, DUMMY) for s in remaining):
                auth: JSONDict = {
                    "type": PASSWORD,
                    "identifier": password_identifier(user_id),
                    "password": password,
                }
            elif stage == DUMMY and all(s in (PASSWORD, DUMMY) for s in remaining):
                auth = {"type": DUMMY}
            else:
                continue
            if state.session is not None:
                auth["session"] = state.session
            return auth
        return None

    return choose


def with_password_auth(request_builder: RequestBuilder, user_id: str, password: str) -> UiaFlow:
    """Send the request; on a 401 UIA answer offering m.login.password, retry with the password
    and the server's session. A refused password raises the server's AuthRequired (errcode set)."""
    return interactive(request_builder, _password_chooser(user_id, password))
