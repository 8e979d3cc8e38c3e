"""HTTP transport: sends `nimbus.api.Request` values to one homeserver over one httpx.AsyncClient.

Owns connection reuse, timeouts, retries and the mapping of HTTP failures onto `nimbus.api.errors`.
Rules:
- the access token goes only in the `Authorization: Bearer` header (spec v1.12 "Using access tokens"),
  never in a URL, a log line or an exception message (server error text is scrubbed of it);
- nothing here logs request or response bodies; logs name the method and path only;
- retries, with exponential backoff and jitter, only where repeating cannot change the effect:
  connect failures always (nothing was sent); 502/503/504, 5xx without a Matrix body, read timeouts
  and dropped connections only for `request.is_retry_safe()`; 429 for any request (the server
  refused it), waiting `Retry-After` / `retry_after_ms` (spec: #rate-limiting) if it is not longer
  than `max_retry_after`, otherwise LimitExceeded is raised at once for the caller to schedule;
- after the last retry the matching error is raised (ServerUnreachable, RequestTimeout, MatrixError…).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from nimbus.api.errors import (
    AuthRequired,
    LimitExceeded,
    MalformedResponse,
    MatrixError,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    error_from_response,
)
from nimbus.api.request import Request
from nimbus.api.uia import UiaResult

log = logging.getLogger("nimbus.client.transport")

T = TypeVar("T")
JSONDict = dict[str, Any]

_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryInfo:
    """Passed to `on_retry` before each wait: what failed, which retry comes next, how long we wait."""

    method: str
    path: str
    attempt: int
    delay: float
    reason: str


class _Retry(Exception):
    """Internal: this attempt failed in a retryable way."""

    def __init__(self, error: Exception, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        self.delay = delay


class Transport:
    """One homeserver connection pool. Use as `async with Transport(url, access_token=...) as t:`."""

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        max_retry_after: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[RetryInfo], None] | None = None,
        rng: random.Random | None = None,
        user_agent: str = "nimbus",
        verify: str | bool = True,
    ) -> None:
        self._access_token = access_token
        self._timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self.on_retry = on_retry
        self._rng = rng or random.Random()  # jitter, not secrets
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": user_agent},
            follow_redirects=False,
            # `verify`: True (system CAs), or the path of a PEM CA file for a self-hosted private CA.
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
        )

    # --- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    @property
    def access_token(self) -> str | None:
        return self._access_token

    @access_token.setter
    def access_token(self, token: str | None) -> None:
        self._access_token = token

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, authenticated={self._access_token is not None})"

    # --- public sends ----------------------------------------------------------------------------

    async def send(self, request: Request) -> JSONDict:
        """Send and return the JSON object answered (every Matrix endpoint answers an object)."""
        body = await self.send_json(request)
        if not isinstance(body, dict):
            raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}", _where(request))
        return body

    async def send_json(self, request: Request) -> Any:
        """Send and return any JSON value (for the few endpoints answering arrays, e.g. /state)."""
        response = await self._send_with_retries(request)
        return _decode(response, request)

    async def send_bytes(self, request: Request) -> tuple[bytes, str]:
        """Send (e.g. a media download) and return the raw body and its Content-Type."""
        response = await self._send_with_retries(request)
        return response.content, response.headers.get("content-type", "application/octet-stream")

    async def drive(self, flow: Generator[Request, UiaResult, T]) -> T:
        """Run a sans-I/O flow (see nimbus.api.uia): send each request it yields, feed back the
        success body or the 401 UIA error, and return its result. Other errors close the flow."""
        try:
            request = next(flow)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        while True:
            try:
                result = UiaResult(body=await self.send(request))
            except AuthRequired as exc:
                result = UiaResult(auth_required=exc)
            except BaseException:
                flow.close()
                raise
            try:
                request = flow.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

    # --- internals -------------------------------------------------------------------------------

    def _build(self, request: Request) -> httpx.Request:
        headers: dict[str, str] = {"Accept": "application/json"}
        if request.auth and self._access_token is not None:
            headers["Authorization"] = f"Bearer {self._access_token}"
        if request.content_type is not None:
            headers["Content-Type"] = request.content_type
        params: list[tuple[str, str | int | float | bool | None]] = [
            (key, item)
            for key, value in request.query.items()
            for item in ((value,) if isinstance(value, str) else value)
        ]
        timeout = (
            httpx.Timeout(self._timeout, read=request.timeout)
            if request.timeout is not None
            else httpx.Timeout(self._timeout)
        )
        content: bytes | None = request.content
        if request.json is not None:
            content = json.dumps(request.json, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        elif content is None and request.method in ("POST", "PUT"):
            content = b"{}"  # spec "API Standards": POST/PUT carry a (possibly empty) JSON object
            headers.setdefault("Content-Type", "application/json")
        return self._client.build_request(
            request.method, request.path, params=params, content=content, headers=headers, timeout=timeout
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    async def _send_with_retries(self, request: Request) -> httpx.Response:
        attempt = 0
        while True:
            try:
                return await self._attempt(request)
            except _Retry as retry:
                if attempt >= self.max_retries:
                    raise retry.error from None
                delay = retry.delay if retry.delay is not None else self._backoff(attempt)
                attempt += 1
                log.info(
                    "%s %s: %s; retry %d in %.2fs", request.method, request.path, retry.reason, attempt, delay
                )
                if self.on_retry is not None:
                    self.on_retry(RetryInfo(request.method, request.path, attempt, delay, retry.reason))
                await self._sleep(delay)

    async def _attempt(self, request: Request) -> httpx.Response:
        where = _where(request)
        safe = request.is_retry_safe()
        try:
            response = await self._client.send(self._build(request))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the server: always safe to repeat.
            error: Exception = ServerUnreachable(f"{where}: cannot connect ({type(exc).__name__})")
            raise _Retry(error, f"connect failed ({type(exc).__name__})") from None
        except httpx.TimeoutException as exc:
            error = RequestTimeout(f"{where}: no answer in time ({type(exc).__name__})")
            if safe:
                raise _Retry(error, f"timed out ({type(exc).__name__})") from None
            raise error from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            error = ServerUnreachable(f"{where}: connection closed or reset ({type(exc).__name__})")
            if safe:
                raise _Retry(error, f"connection lost ({type(exc).__name__})") from None
            raise error from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{where}: transport failure ({type(exc).__name__})") from None

        if response.is_success:
            return response
        matrix_error = self._error(response, request)
        status = response.status_code
        if isinstance(matrix_error, LimitExceeded) or status == 429:
            wait_ms = matrix_error.retry_after_ms if isinstance(matrix_error, LimitExceeded) else None
            if wait_ms is not None and wait_ms / 1000 > self.max_retry_after:
                raise matrix_error
            delay = wait_ms / 1000 if wait_ms is not None else None
            raise _Retry(matrix_error, f"rate limited (HTTP {status})", delay)
        if safe and (status in _RETRY_STATUSES or isinstance(matrix_error, ServerError)):
            raise _Retry(matrix_error, f"HTTP {status}")
        raise matrix_error

    def _error(self, response: httpx.Response, request: Request) -> MatrixError:
        try:
            body: Any = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and self._access_token:
            body = _scrub(body, self._access_token)
        return error_from_response(response.status_code, body, response.headers, endpoint=_where(request))


def _where(request: Request) -> str:
    """Method and path, never the query (it may carry since tokens or filenames)."""
    return f"{request.method} {request.path}"


def _decode(response: httpx.Response, request: Request) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponse("the answer is not JSON", _where(request)) from None


def _scrub(body: JSONDict, token: str) -> JSONDict:
    """Replace the access token wherever a server echoed it into a string field of an error body."""
    out: JSONDict = {}
    for key, value in body.items():
        out[key] = value.replace(token, "<redacted>") if isinstance(value, str) else value
    return out
