"""A Client-Server API request as a value.

Endpoint builders in this package return `Request`s; the client's transport executes them. Paths are
fully percent-encoded by the builders (use `quote` below for every path parameter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as _quote

JSONDict = dict[str, Any]
QueryValue = str | Sequence[str]
"""A query parameter: one value, or several for a repeated key (e.g. `via`)."""


def quote(part: str) -> str:
    """Percent-encode one path segment (ids contain `!`, `:`, `@`, `$`, `#`)."""
    return _quote(part, safe="")


@dataclass(frozen=True)
class Request:
    """One HTTP request to a homeserver.

    `path` starts with `/_matrix/...` and is already encoded. `json` and `content` are exclusive.
    `auth` says whether the access token goes in the Authorization header (spec: "Using access
    tokens": header, never the query string). `timeout` overrides the transport's default, e.g. for
    a long-polling /sync. `retry_safe` says whether repeating the request cannot change its effect
    (GET, and PUT with a transaction id); the transport only retries such requests.
    """

    method: str
    path: str
    query: Mapping[str, QueryValue] = field(default_factory=dict)
    json: JSONDict | None = field(default=None, repr=False)  # may hold a password: never in repr
    content: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    auth: bool = True
    timeout: float | None = None
    retry_safe: bool | None = None

    def is_retry_safe(self) -> bool:
        if self.retry_safe is not None:
            return self.retry_safe
        return self.method in ("GET", "PUT", "DELETE", "HEAD", "OPTIONS")
